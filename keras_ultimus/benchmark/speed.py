"""Speed measurements for `python -m keras_ultimus.bench`: FLOPs, matmul peak, training, evaluation, pipeline.

Everything here runs inside one backend's process and times through that
backend: the matmul peak through `keras.ops`, training through `fit` and
evaluation through `evaluate`, on the same input pipeline `train` uses.
"""

import math
import os
import statistics
import time

import keras
import numpy as np

from keras_ultimus.models.layers import UltimusLayer

# The compute dtype of each Keras precision policy, for the matmul peak it is measured against.
COMPUTE_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def layer_flops(layer: keras.layers.Layer) -> int:
    """Forward FLOPs per image of one layer: conv, dense and attention matmuls (a multiply-add is 2 FLOPs).

    Elementwise work (GELU, BatchNorm, softmax, pooling) is not counted: it is
    memory-bound and has no matmul peak to compare against.
    """
    if isinstance(layer, keras.layers.Conv2D):
        out_h, out_w = layer.output.shape[1:3]
        kh, kw, c_in, c_out = layer.kernel.shape  # c_in is already divided by the groups
        return 2 * out_h * out_w * c_out * kh * kw * c_in
    if isinstance(layer, keras.layers.Dense):
        fan_in, units = layer.kernel.shape
        return 2 * fan_in * units
    if isinstance(layer, UltimusLayer):
        d = layer.key_dim
        dense = sum(
            layer_flops(sub)
            for sub in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)
        )
        return dense + d * d + 2 * d * d  # the q ⊗ k outer product, then z = v · AM
    return 0


def forward_flops(model: keras.Model) -> int:
    """Forward FLOPs per image of a built functional model, counted from its layers' shapes."""
    return sum(layer_flops(layer) for layer in model.layers)


def training_flops(model: keras.Model) -> int:
    """FLOPs per training image: forward, plus about twice that for the gradients of inputs and weights."""
    return 3 * forward_flops(model)


def sync(x) -> None:
    """Wait until a backend tensor is computed (JAX and torch dispatch asynchronously on accelerators)."""
    keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.sum(x[:1, :1]), "float32"))


def matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5, plan=None) -> float:
    """The machine's matmul throughput in GFLOP/s through the current backend: median of `repeats` n×n products.

    Under a mirrored `plan` (a `distribute.Plan`), every replica multiplies at
    once, as in training, and their FLOPs add up.
    """
    rng = np.random.default_rng(0)
    a = keras.ops.cast(rng.standard_normal((n, n), dtype=np.float32), dtype)
    b = keras.ops.cast(rng.standard_normal((n, n), dtype=np.float32), dtype)
    if plan is not None and plan.strategy is not None:
        multiply, copies = plan.on_every_replica(keras.ops.matmul), plan.replicas
    else:
        multiply, copies = (lambda x, y: [keras.ops.matmul(x, y)]), 1

    def timed() -> float:
        start = time.perf_counter()
        for x in multiply(a, b):
            sync(x)
        return time.perf_counter() - start

    timed()
    return copies * 2 * n**3 / statistics.median(timed() for _ in range(repeats)) / 1e9


class EpochTimes(keras.callbacks.Callback):
    """Record each epoch's wall time (from its first batch to its end), to get steady-state speed out of `fit`."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def synthetic_cifar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 CIFAR-10-shaped images and labels; speed doesn't depend on the pixel values."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(
        "int32"
    )


def train_speed(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    steps: int,
    repeats: int,
    batch_size: int,
    pipeline: str,
) -> list[float]:
    """Training img/s of `repeats` epochs of `steps` steps each, after one warm-up epoch (compilation)."""
    from keras_ultimus.training.fitting import fit_arrays

    timer = EpochTimes()
    fit_arrays(
        model,
        images,
        labels,
        batch_size=batch_size,
        seed=0,
        pipeline=pipeline,
        epochs=repeats + 1,
        callbacks=[timer],
        steps_per_epoch=steps,
    )
    done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if (
        done != (repeats + 1) * steps
    ):  # the data ran out: a short epoch would count steps it never ran
        raise RuntimeError(
            f"timed {done} training steps, expected {(repeats + 1) * steps}: give more images"
        )
    return [steps * batch_size / s for s in timer.seconds[1:]]


def eval_speed(
    model: keras.Model, dataset, steps: int, repeats: int, batch_size: int
) -> list[float]:
    """Evaluation img/s of `repeats` passes over `steps` batches, after one warm-up pass."""
    speeds = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        model.evaluate(dataset, steps=steps, verbose=0)
        if i:
            speeds.append(steps * batch_size / (time.perf_counter() - start))
    return speeds


def pipeline_speed(
    dataset, data_epoch: keras.callbacks.Callback, repeats: int, batch_size: int
) -> list[float]:
    """Input-pipeline img/s alone: whole epochs of batches, each epoch set up as `fit` sets it up.

    tf.data runs as `fit` runs it; a `PyDataset` is read batch by batch through its public `__getitem__`, in this
    thread without its prefetching workers, so its figure is a lower bound of what `fit` gets.
    """

    def batches(epoch):
        data_epoch.on_epoch_begin(epoch)
        if hasattr(dataset, "element_spec"):  # tf.data
            return iter(dataset)
        dataset.on_epoch_begin()
        return (dataset[i] for i in range(dataset.num_batches))

    speeds = []
    for epoch in range(repeats + 1):
        start = time.perf_counter()
        count, x = 0, None
        for x, _ in batches(epoch):
            count += len(x)
        if x is not None and not isinstance(x, np.ndarray):
            keras.ops.convert_to_numpy(
                x[:1]
            )  # device batches are made asynchronously: wait for the last one
        if epoch:  # the first pass warms up
            speeds.append(count / (time.perf_counter() - start))
    return speeds


def measure_backend(
    precisions: list[str],
    batch_size: int = 512,
    steps: int = 5,
    repeats: int = 3,
    jit: str = "auto",
    pipeline: str = "auto",
    steps_per_execution: int = 1,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    matmul_size: int = 2048,
    plan=None,
) -> dict:
    """Every figure of one backend, measured in this process: peaks, pipeline, and train/eval img/s per precision.

    A mirrored `plan` builds, trains and evaluates under its strategy, with
    synchronized BatchNorm so the math stays that of one `batch_size` batch.
    """
    from keras_ultimus.datasets import pipelines
    from keras_ultimus.models.ultimus import build_model
    from keras_ultimus.training import distribute
    from keras_ultimus.training.compiling import compile_model

    kind = pipelines.resolve(pipeline)
    if images is None:
        images, labels = synthetic_cifar(
            batch_size * steps * (repeats + 1)
        )  # fit keeps one iterator
    plan = plan or distribute.Plan()
    result = {
        "backend": keras.backend.backend(),
        "pipeline": kind,
        "jit": jit,
        "load_before": os.getloadavg()[0],
        "distribute": plan.record(),
    }
    dtypes = sorted({"float32", "bfloat16", *(COMPUTE_DTYPE[p] for p in precisions)})
    result["peak_gflops"] = {d: matmul_peak(d, matmul_size, plan=plan) for d in dtypes}
    dataset, data_epoch = pipelines.train_data(
        images, labels, batch_size, seed=0, augment=True, kind=kind
    )
    result["pipeline_img_s"] = pipeline_speed(dataset, data_epoch, repeats, batch_size)
    result["precisions"] = {}
    for precision in precisions:
        keras.mixed_precision.set_dtype_policy(precision)
        keras.utils.set_random_seed(0)
        with plan.scope():
            model = build_model(sync_bn=plan.mode == "mirrored")
            compile_model(
                model,
                3e-3,
                total_steps=(repeats + 1) * steps,
                jit=jit,
                steps_per_execution=steps_per_execution,
            )
            train = train_speed(model, images, labels, steps, repeats, batch_size, kind)
            test = pipelines.eval_data(images, labels, batch_size, kind=kind)
            evaluate = eval_speed(
                model, test, min(steps, math.ceil(len(images) / batch_size)), repeats, batch_size
            )
        result["precisions"][precision] = {
            "train_img_s": train,
            "eval_img_s": evaluate,
            "training_flops": training_flops(model),
            "jit_compile": str(model.jit_compile),
        }
    keras.mixed_precision.set_dtype_policy("float32")
    result["load_after"] = os.getloadavg()[0]
    return result


def serving_speed(
    predictor, calls: int = 200, batches: int = 20, batch_size: int = 256, warmup: int = 5
) -> dict:
    """Batch-1 latency in ms (median, p90) and batch-`batch_size` throughput in img/s of a predictor."""
    images = np.random.default_rng(0).integers(0, 256, (batch_size, 32, 32, 3), np.uint8)
    one = images[:1]
    for _ in range(warmup):
        predictor(one)
        predictor(images)
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        predictor(one)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(batches):
        predictor(images)
    seconds = time.perf_counter() - start
    return {
        "latency_ms_median": 1000 * float(np.median(latencies)),
        "latency_ms_p90": 1000 * float(np.percentile(latencies, 90)),
        "throughput_img_s": batches * batch_size / seconds,
    }

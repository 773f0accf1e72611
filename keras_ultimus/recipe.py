"""The training recipe shared by `train` and the tuner: compile, callbacks, run folders, `fit`."""

import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import pandas as pd

import keras_ultimus
from keras_ultimus import distribute
from keras_ultimus.errors import UserError
from keras_ultimus.evaluation import accuracies
from keras_ultimus.loading import save_for_inference
from keras_ultimus.model import build_model
from keras_ultimus.pipelines import batches_per_epoch, eval_data, resolve, train_data
from keras_ultimus.losses import SmoothedSparseCrossentropy
from keras_ultimus.provenance import git_state
from keras_ultimus.recipe_options import RecipeOptions
from keras_ultimus.run_folder import CSV_NAME, INFO_NAME, MODEL_NAME, write_atomic
from keras_ultimus.schedules import OneCycle

MODEL_ARGS = ("num_blocks", "key_dim", "scale", "residual", "conv_widths", "downsample", "bn_momentum", "sync_bn",
              "attention", "pooling", "stem")
# --jit flag value -> `jit_compile` of `Model.compile` ("auto": Keras' default for the backend).
JIT = {"auto": "auto", "on": True, "off": False}


class EpochStats(keras.callbacks.Callback):
    """Add the learning rate and the epoch's wall time to the logs for CSVLogger."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        logs["epoch_seconds"] = round(time.perf_counter() - self._start, 2)


class TrimLog(keras.callbacks.Callback):
    """On a resumed fit, drop CSV rows of epochs that will run again and restore the best score.

    The first `on_epoch_begin` gets the epoch `BackupAndRestore` restored; it,
    not `optimizer.iterations`, says what was done (a step skipped by loss
    scaling would otherwise shift the count).
    """

    def __init__(self, csv_path: Path, checkpoint: keras.callbacks.ModelCheckpoint):
        super().__init__()
        self.csv_path, self.checkpoint, self._first = csv_path, checkpoint, True

    def on_epoch_begin(self, epoch, logs=None):
        if not self._first:
            return
        self._first = False
        # Also at epoch 0: a kill between epoch 0's CSV row and its first backup resumes there.
        if self.csv_path.exists() and self.csv_path.stat().st_size:
            log = pd.read_csv(self.csv_path)
            kept = log[log["epoch"] < epoch]
            if len(kept) < len(log):
                kept.to_csv(self.csv_path, index=False)
            if len(kept):
                self.checkpoint.best = float(kept["val_accuracy"].max())
        if epoch:
            print(f"Resumed after epoch {epoch}.")


class RunClock(keras.callbacks.Callback):
    """Write the run's wall time into run.json at every epoch end, so a killed segment still counts."""

    def __init__(self, run_info: dict, path: Path, start: float):
        super().__init__()
        self.run_info, self.path, self.start = run_info, path, start
        run_info.setdefault("segments_seconds", []).append(0.0)

    def on_epoch_end(self, epoch, logs=None):
        self.update()

    def update(self) -> None:
        """Record the time since this segment started and rewrite run.json."""
        self.run_info["segments_seconds"][-1] = round(time.perf_counter() - self.start, 1)
        self.run_info["wall_seconds"] = round(sum(self.run_info["segments_seconds"]), 1)
        write_atomic(self.path, json.dumps(self.run_info, indent=2))


@keras.saving.register_keras_serializable(package="keras_ultimus")
class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, except that a skipped step still counts in `iterations`.

    Keras' `LossScaleOptimizer` skips the update when the scaled gradients
    overflow and leaves `iterations` alone, so a schedule driven by
    `iterations` (OneCycle) would fall one step behind per skip and never
    reach its end. PyTorch's `GradScaler` + `OneCycleLR` step the schedule
    anyway; so does this.
    """

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)

    def _stateless_handle_non_finite_grads(self, optimizer_variables, trainable_variables):
        trainable_variables, new_variables = super()._stateless_handle_non_finite_grads(
            optimizer_variables, trainable_variables
        )
        i = next(i for i, v in enumerate(self.variables) if v is self.inner_optimizer.iterations)
        new_variables[i] = new_variables[i] + 1
        return trainable_variables, new_variables


def make_optimizer(
    schedule: keras.optimizers.schedules.LearningRateSchedule, options: RecipeOptions
) -> keras.optimizers.Optimizer:
    """Adam (the reference), AdamW when weight decay is set, or Nesterov SGD; with an EMA of the weights if asked.

    Weight decay skips BatchNorm's gamma and beta and every bias.
    """
    ema = {"use_ema": True, "ema_momentum": options.ema} if options.ema else {}
    if options.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule, momentum=options.momentum, nesterov=True, weight_decay=options.weight_decay or None, **ema
        )
    elif options.weight_decay:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=options.weight_decay, **ema)
    else:
        optimizer = keras.optimizers.Adam(schedule, **ema)
    if options.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def compile_model(
    model: keras.Model, max_lr: float, total_steps: int, pct_start: float = 0.25, jit: str = "auto",
    options: RecipeOptions = RecipeOptions(),
) -> None:
    """Compile with the recipe's optimizer on the one-cycle schedule, cross-entropy on logits, accuracy.

    A `mixed_float16` model gets dynamic loss scaling, as `compile` would add it.
    """
    optimizer = make_optimizer(OneCycle(max_lr, total_steps, pct_start), options)
    if model.dtype_policy.name == "mixed_float16":
        optimizer = LossScaleOptimizer(optimizer, name="loss_scale_optimizer")
    if options.label_smoothing:
        loss = SmoothedSparseCrossentropy(options.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=JIT[jit])


def recipe_callbacks(options: RecipeOptions) -> list[keras.callbacks.Callback]:
    """The callbacks a recipe needs in `fit`: validation on the EMA weights when there is an EMA."""
    return [keras.callbacks.SwapEMAWeights()] if options.ema else []


def model_kwargs(config: dict) -> dict:
    """Pick the `build_model` arguments out of a run config (sync_bn only when set: most runs predate it)."""
    return {k: config[k] for k in MODEL_ARGS if k in config and (k != "sync_bn" or config[k])}


def build(config: dict, precision: str = "float32") -> keras.Model:
    """Build the model of `config` under the `precision` dtype policy; bad arguments raise UserError."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return build_model(**model_kwargs(config))
    except ValueError as e:
        raise UserError(f"bad model settings: {e}") from None
    finally:
        keras.config.set_dtype_policy(before)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend; with `deterministic`, also ask the backend for deterministic ops."""
    keras.utils.set_random_seed(seed)
    if not deterministic:
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' deterministic mode needs it
        torch.use_deterministic_algorithms(True)


def environment() -> dict:
    """Package version and git commit, backend, library versions and machine, for run.json."""
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    for name in ("tensorflow", "torch", "jax"):
        if name in sys.modules and hasattr(sys.modules[name], "__version__"):
            versions[name] = sys.modules[name].__version__
    return {
        "keras_ultimus": {"version": keras_ultimus.__version__, **git_state()},
        "backend": keras.backend.backend(),
        "versions": versions,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }


def fingerprint(data: tuple) -> str:
    """A hash of the CIFAR-10 arrays, so a resumed run can check that moved data is the same data."""
    h = hashlib.blake2b(digest_size=16)
    for images, labels in data:
        for array in (images, labels):
            h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """Keras' TensorBoard callback when TensorFlow is importable, else none (and one line saying so)."""
    try:
        from keras_ultimus import tfdata  # noqa: F401  hides GPUs from TensorFlow under torch/jax first
    except ImportError:
        print("TensorBoard logs need TensorFlow; skipping")
        return []
    return [keras.callbacks.TensorBoard(log_dir, write_graph=False)]


def train(config: dict, out: Path, data: tuple, resume: bool = False, command: str = "",
          plan: "distribute.Plan | None" = None, extra: dict | None = None) -> dict:
    """Fit the model described by `config` on `data` into run folder `out`; return run.json.

    Everything that can fail on bad input (data, model settings, the folder)
    is checked before the first file is written. Under a multi-process `plan`
    only the chief writes `out`; `extra` goes into a new run's run.json.
    """
    start = time.perf_counter()
    plan = plan or distribute.Plan()
    out = plan.output_dir(out)  # a scratch copy on non-chief processes: they save what the chief saves
    run_info = json.loads((out / INFO_NAME).read_text()) if resume else {}
    digest = fingerprint(data)
    if resume and run_info.get("data_fingerprint", digest) != digest:
        raise UserError(f"--data {config['data']}: not the data run {out} trained on")
    precision, jit = config.get("precision", "float32"), config.get("jit", "auto")
    try:
        options = RecipeOptions.from_config(config)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad recipe settings: {e}") from None
    pipeline = run_info.get("pipeline") or resolve(config.get("pipeline", "auto"))
    seed_everything(config["seed"], config.get("deterministic", False))

    (x_train, y_train), (x_test, y_test) = data
    x_train, y_train = plan.shard(x_train[: config["limit_train"]], y_train[: config["limit_train"]])
    x_test, y_test = plan.shard(x_test[: config["limit_test"]], y_test[: config["limit_test"]])
    batch = plan.local_batch_size(config["batch_size"])  # the global batch stays --batch-size
    train_ds, data_epoch = train_data(x_train, y_train, batch, config["seed"], config["augment"], kind=pipeline)
    test_ds = eval_data(x_test, y_test, batch, kind=pipeline)
    steps = batches_per_epoch(len(x_train), batch) * config["epochs"]  # global steps: one per global batch
    with plan.scope():
        model = build(config, precision)
        compile_model(model, config["max_lr"], steps, config["pct_start"], jit, options)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the run folder ({e.strerror})") from None

    if not resume:
        run_info = {
            "config": config, "command": command, **environment(),
            "precision": precision, "jit_compile": bool(model.jit_compile), "pipeline": pipeline,
            "distribute": plan.record(), "data_fingerprint": digest,
            "started": datetime.now().isoformat(timespec="seconds"), **(extra or {}),
        }
        with open(out / "summary.txt", "w") as f:
            model.summary(print_fn=lambda line, **_: f.write(line + "\n"))
        model.summary()
    else:
        run_info["config"] = config  # --data may point to a moved copy
        run_info.setdefault("resumed", []).append(
            {"command": command, "at": datetime.now().isoformat(timespec="seconds"), **environment()}
        )
    clock = RunClock(run_info, out / INFO_NAME, start)
    clock.update()

    csv_path = out / CSV_NAME
    best = distribute.PortableCheckpoint(
        out / "best.keras", monitor="val_accuracy", mode="max", save_best_only=True
    )
    # double_checkpoint keeps the previous backup, in case a kill lands mid-write.
    backup = keras.callbacks.BackupAndRestore(out / "backup", double_checkpoint=True)
    with plan.scope():
        model.fit(
            train_ds,
            validation_data=test_ds,
            epochs=config["epochs"],
            shuffle=False,  # the pipeline shuffles, by (seed, epoch)
            # On each epoch's end the CSV row is written before the backup, and on resume
            # TrimLog drops rows the restored state hasn't seen, so every epoch is logged once.
            callbacks=[
                data_epoch,
                *recipe_callbacks(options),
                EpochStats(),
                *tensorboard(out / "tensorboard"),
                keras.callbacks.CSVLogger(csv_path, append=True),
                best,
                backup,
                TrimLog(csv_path, best),
                clock,
            ],
        )
        with distribute.portable_batchnorm(model):
            save_for_inference(model, out / MODEL_NAME)
    run_info["finished"] = datetime.now().isoformat(timespec="seconds")
    run_info["final"] = pd.read_csv(csv_path).iloc[-1].to_dict()
    if options.tta == "flip":  # val_accuracy stays the plain figure; the TTA one has its own key
        tta = accuracies(model, x_test, y_test, batch)["test_accuracy_flip_tta"]
        run_info["final"]["test_accuracy_flip_tta"] = tta
        print(f"Test accuracy: {run_info['final']['val_accuracy']:.2%} plain, {tta:.2%} with flip TTA")
    clock.update()
    return run_info

"""Time each layer of the reference model, forward and forward + backward, on the current Keras backend.

Usage: KERAS_BACKEND=jax python benchmarks/layer_times.py [--batch-size 128] [--repeats 5] [--json OUT]

Each layer runs alone on its own input shape, compiled the way the backend trains (`jax.jit`, `tf.function`
without XLA, eager torch), and the whole train step is timed beside them, so the table says which layers a
backend is slow on. Run it under two backends and compare the rows: the same shapes, the same math.
"""

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ultimus.models.ultimus import build_model  # noqa: E402
from keras_ultimus.training.compiling import compile_model  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median ms of `fn()` over `repeats` calls, after one warm-up call (compilation)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def layer_fns(layer: keras.layers.Layer, x: np.ndarray):
    """(forward, forward + backward) callables of `layer` on input `x`, compiled as the backend trains."""
    backend = keras.backend.backend()
    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]
    kwargs = {"training": True} if "training" in inspect.signature(layer.call).parameters else {}

    def loss(weights, inputs):
        out, _ = layer.stateless_call(weights, frozen, inputs, **kwargs)
        return keras.ops.sum(keras.ops.cast(out, "float32"))

    if backend == "jax":
        import jax

        forward = jax.jit(loss)
        both = jax.jit(jax.grad(loss, argnums=(0, 1)))
        xj = jax.numpy.asarray(x)
        return (
            lambda: jax.block_until_ready(forward(trainable, xj)),
            lambda: jax.block_until_ready(both(trainable, xj)),
        )
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        weights = [tf.Variable(w) for w in trainable]

        @tf.function(jit_compile=False)
        def forward():
            return loss(weights, xt)

        @tf.function(jit_compile=False)
        def both():
            with tf.GradientTape() as tape:
                tape.watch(xt)
                value = loss(weights, xt)
            return tape.gradient(value, [*weights, xt])

        return (lambda: forward().numpy(), lambda: [g.numpy() for g in both()])
    import torch

    xt = torch.tensor(x, requires_grad=True)
    weights = [w.detach().clone().requires_grad_(True) for w in trainable]

    def both():
        value = loss(weights, xt)
        value.backward()

    def forward():
        with torch.no_grad():
            loss(weights, xt).item()

    return forward, both


def main() -> None:
    """Print per-layer forward and forward + backward ms, and the whole train step, for this backend."""
    p = argparse.ArgumentParser(prog="python benchmarks/layer_times.py", description=main.__doc__)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    keras.utils.set_random_seed(0)
    model = build_model()
    rng = np.random.default_rng(0)
    rows = []
    for layer in model.layers[1:]:
        shape = (args.batch_size, *layer.input.shape[1:])
        x = rng.normal(size=shape).astype("float32") * (50 if layer.name == "normalize" else 1)
        forward, both = layer_fns(layer, x)
        rows.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "input": str(shape),
                "forward_ms": timed(forward, args.repeats),
                "forward_backward_ms": timed(both, args.repeats),
            }
        )
    images = rng.integers(0, 256, (args.batch_size * (args.repeats + 1), 32, 32, 3)).astype(
        "float32"
    )
    labels = rng.integers(0, 10, len(images)).astype("int32")
    compile_model(model, 3e-3, total_steps=1000)
    model.fit(
        images[: args.batch_size], labels[: args.batch_size], batch_size=args.batch_size, verbose=0
    )  # compile
    start = time.perf_counter()
    model.fit(images, labels, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)
    step_ms = (time.perf_counter() - start) * 1000 / (args.repeats + 1)
    total = sum(r["forward_backward_ms"] for r in rows)
    backend = keras.backend.backend()
    print(
        f"backend {backend}, batch {args.batch_size}, threads: {os.cpu_count()} CPUs; "
        f"train step {step_ms:.0f} ms; layers' forward + backward sum {total:.0f} ms"
    )
    print(f"{'layer':<12} {'type':<22} {'forward ms':>10} {'fwd+bwd ms':>10} {'share':>6}")
    for r in rows:
        print(
            f"{r['layer']:<12} {r['type']:<22} {r['forward_ms']:>10.1f} {r['forward_backward_ms']:>10.1f} "
            f"{r['forward_backward_ms'] / total:>6.0%}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "backend": backend,
                    "batch_size": args.batch_size,
                    "train_step_ms": step_ms,
                    "layers": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

"""Where a training step of the reference model spends its time on the torch backend, per aten op.

Usage: KERAS_BACKEND=torch python benchmarks/profile_torch.py [--batch-size 512] [--steps 3] [--top 20]

Profiles `--steps` steps of `fit` (after 2 warm-up steps) with `torch.profiler`
and prints each op's share of the summed self CPU time. Layout ops
(permute, contiguous copies) show what Keras' NHWC-to-NCHW conversions cost
against `benchmarks/plain_torch.py`, which is NCHW throughout.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from keras_ultimus.models.ultimus import build_model  # noqa: E402
from keras_ultimus.training.compiling import compile_model  # noqa: E402

# aten ops that only move data between layouts: what NCHW throughout would not need.
LAYOUT_OPS = ("aten::copy_", "aten::permute", "aten::contiguous", "aten::clone", "aten::transpose")


def main() -> None:
    """Profile `fit` steps and print per-op ms per step and share of self CPU time."""
    p = argparse.ArgumentParser(prog="python benchmarks/profile_torch.py", description=main.__doc__)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch_size * args.steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.batch_size * args.steps).astype("int32")
    model = build_model()
    compile_model(model, 3e-3, total_steps=100)
    model.fit(
        x[: 2 * args.batch_size],
        y[: 2 * args.batch_size],
        batch_size=args.batch_size,
        epochs=1,
        verbose=0,
    )
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"{args.steps} steps: {total / 1e3 / args.steps:.0f} ms of op time per step"
    )
    for name, us in sorted(ops.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{us / 1e3 / args.steps:9.1f} ms/step {us / total:6.1%}  {name}")
    layout = sum(us for name, us in ops.items() if name in LAYOUT_OPS)
    print(f"layout ops ({', '.join(LAYOUT_OPS)}): {layout / total:.1%} of self CPU time")


if __name__ == "__main__":
    main()

"""Where a TensorFlow training step of the reference model spends its time, per TF kernel.

Usage: python benchmarks/profile_tf.py [--precision float32|mixed_bfloat16] [--batch-size 512] [--steps 3]

Traces `--steps` steps of `fit` (after 2 warm-up steps) with the TF profiler,
reads the trace's `.xplane.pb` and prints each kernel's share of the summed op time.
"""

import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from keras_ultimus.models.ultimus import build_model  # noqa: E402
from keras_ultimus.training.compiling import compile_model  # noqa: E402

# Events of the trace that wrap whole steps rather than kernels.
WRAPPERS = ("Process", "Run")


def main() -> None:
    """Profile `fit` steps and print per-kernel ms per step and share."""
    p = argparse.ArgumentParser(prog="python benchmarks/profile_tf.py", description=main.__doc__)
    p.add_argument(
        "--precision", default="float32", choices=("float32", "mixed_bfloat16", "mixed_float16")
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    keras.mixed_precision.set_dtype_policy(args.precision)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch_size * 2, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.batch_size * 2).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache().repeat()
    model = build_model()
    compile_model(model, 3e-3, total_steps=100)
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    logdir = tempfile.mkdtemp(prefix="profile_tf-")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(
        Path(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]).read_bytes()
    )
    kernels = collections.Counter()
    for plane in space.planes:
        if "host:CPU" not in plane.name:
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names[event.metadata_id]
                if ":" in name:  # TF op events read "op_name:KernelType"
                    kernel = name.split(":")[-1].strip()
                    if kernel not in WRAPPERS and not kernel.startswith(
                        "__"
                    ):  # __inference_*: a whole tf.function
                        kernels[kernel] += event.duration_ps
    total = sum(kernels.values())
    print(
        f"{args.precision}, batch {args.batch_size}: {args.steps * args.batch_size / wall:.0f} img/s while traced; "
        f"load average {os.getloadavg()[0]:.1f}; trace in {logdir}"
    )
    for kernel, ps in kernels.most_common(args.top):
        print(f"  {kernel:36s} {ps / 1e9 / args.steps:9.1f} ms/step {100 * ps / total:5.1f}%")


if __name__ == "__main__":
    main()

"""Time `fit` fed NumPy arrays vs the tf.data pipeline, to see what the hand-off costs a backend.

Usage: KERAS_BACKEND=torch python tools/data_handoff.py [--images 4096] [--conv-widths 4,8,8]

A small model keeps compute low, so data handling shows. Both inputs carry the
same random uint8 images, shuffled, without augmentation; epochs alternate
between them after one warm-up epoch each, and the median img/s is printed.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/data_handoff.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ultimus.datasets.tfdata import train_dataset  # noqa: E402
from keras_ultimus.models.ultimus import build_model  # noqa: E402
from keras_ultimus.training.compiling import compile_model  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    """Print img/s of one-epoch fits on NumPy arrays and on tf.data, alternating."""
    p = argparse.ArgumentParser(prog="python tools/data_handoff.py", description=main.__doc__)
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument(
        "--conv-widths", type=lambda s: [int(w) for w in s.split(",")], default=[4, 8, 8]
    )
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per input")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.images).astype("int32")
    inputs = {
        "numpy": dict(
            x=images.astype("float32"), y=labels, batch_size=args.batch_size, shuffle=True
        ),
        "tf.data": dict(
            x=train_dataset(images, labels, args.batch_size, augment=False)[0], shuffle=False
        ),
    }
    keras.utils.set_random_seed(0)
    model = build_model(conv_widths=args.conv_widths)
    compile_model(model, 1e-3, total_steps=10**6)
    seconds = {name: [] for name in inputs}
    for i in range(args.repeats + 1):
        for name, fit_args in inputs.items():
            start = time.perf_counter()
            model.fit(**fit_args, epochs=1, verbose=0)
            if i:  # the first epoch of each compiles
                seconds[name].append(time.perf_counter() - start)
    for name, times in seconds.items():
        print(
            f"{keras.backend.backend():10s} {name:8s} {args.images / statistics.median(times):8.0f} img/s "
            f"(epochs: {', '.join(f'{t:.2f}' for t in times)} s)"
        )


if __name__ == "__main__":
    main()

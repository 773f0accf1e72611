"""`python -m keras_ultimus.data`: print the CIFAR-10 copy and time the training pipeline(s) alone.

The reader lives in `datasets/cifar10.py`, the pipelines in `datasets/`, and the
timing in `benchmark/speed.py` (`pipeline_speed`, as the bench times them).
"""

import statistics

from keras_ultimus.backend import prepare
from keras_ultimus.constants import PIPELINES
from keras_ultimus.datasets.batching import default_workers
from keras_ultimus.errors import ArgumentParser, cli, prog
from keras_ultimus.flags import add_flags


@cli
def main(argv: list[str] | None = None) -> int:
    """Print the dataset's shapes and class counts, and time the training pipeline(s) alone."""
    parser = ArgumentParser(
        prog=prog("keras_ultimus.data", "ultimus-data"), description=main.__doc__
    )
    add_flags(parser, ["data"])
    parser.add_argument(
        "--pipeline", choices=(*PIPELINES, "both"), default="auto", help="both: tfdata and numpy"
    )
    parser.add_argument("--batch-size", type=int, default=512, help="images per batch")
    parser.add_argument(
        "--epochs",
        type=int,
        default=2,
        help="timed passes over the training set, after one warm-up pass (default 2)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"NumPy pipeline threads (default: {default_workers()} here: one fewer than the CPUs, 1 to 4)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="time only the first N training images"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines"
    )
    args = parser.parse_args(argv)
    for flag in ("batch_size", "epochs", "workers", "limit"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "workers" else 1):
            parser.error(
                f"--{flag.replace('_', '-')} must be at least {0 if flag == 'workers' else 1}, got {value}"
            )
    prepare(verbose=args.verbose)

    import numpy as np

    from keras_ultimus.benchmark.speed import pipeline_speed
    from keras_ultimus.datasets import pipelines
    from keras_ultimus.datasets.cifar10 import load_cifar10

    kinds = ["tfdata", "numpy"] if args.pipeline == "both" else [pipelines.resolve(args.pipeline)]
    for kind in kinds:
        pipelines.resolve(kind)  # a forced tfdata without TensorFlow fails before the data loads
    (x_train, y_train), (x_test, y_test) = load_cifar10(args.data)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        print(f"{split}: {x.shape} {x.dtype}, per class {np.bincount(y, minlength=10).tolist()}")
    x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    for kind in kinds:
        dataset, data_epoch = pipelines.train_data(
            x_train, y_train, args.batch_size, kind=kind, workers=args.workers
        )
        rate = statistics.median(pipeline_speed(dataset, data_epoch, args.epochs, args.batch_size))
        workers = f", workers={dataset.threads}" if kind == "numpy" else ""
        print(
            f"{kind} training pipeline alone (shuffle, crop, flip, batch {args.batch_size}{workers}): {rate:,.0f} img/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

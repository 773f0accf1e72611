"""`python -m keras_ultimus.data`: print the CIFAR-10 copy and time the training pipeline(s) alone.

The reader lives in `cifar10.py`, the pipelines in `tfdata.py` and
`pydataset.py`, the choice between them in `pipelines.py`.
"""

import time

from keras_ultimus.backend import prepare
from keras_ultimus.errors import ArgumentParser, cli
from keras_ultimus.training.run_config import PIPELINES, add_run_flags


def passes(dataset, epochs: int, data_epoch) -> None:
    """Iterate the training data `epochs` times, in order, as `fit` does, discarding the batches."""
    for epoch in range(epochs):
        data_epoch.on_epoch_begin(epoch)
        if hasattr(dataset, "element_spec"):  # tf.data
            for _ in dataset:
                pass
        else:
            for index in range(len(dataset)):
                dataset[index]


@cli
def main(argv: list[str] | None = None) -> int:
    """Print the dataset's shapes and class counts, and time the training pipeline(s) alone."""
    parser = ArgumentParser(prog="python -m keras_ultimus.data", description=main.__doc__)
    add_run_flags(parser, "data")
    parser.add_argument("--pipeline", choices=(*PIPELINES, "both"), default="auto", help="both: tfdata and numpy")
    parser.add_argument("--batch-size", type=int, default=512, help="images per batch")
    parser.add_argument("--epochs", type=int, default=2, help="pipeline passes to time (default 2)")
    parser.add_argument("--workers", type=int, default=None, help="NumPy pipeline threads (default: pipelines.default_workers())")
    parser.add_argument("--limit", type=int, default=None, help="time only the first N training images")
    parser.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    args = parser.parse_args(argv)
    for flag in ("batch_size", "epochs", "workers", "limit"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "workers" else 1):
            parser.error(f"--{flag.replace('_', '-')} must be at least {0 if flag == 'workers' else 1}, got {value}")
    prepare(verbose=args.verbose)

    import numpy as np

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
            x_train, y_train, args.batch_size, kind=kind, workers=args.workers)
        next(iter(dataset)) if kind == "tfdata" else dataset[0]  # warm-up: builds the pipeline
        start = time.perf_counter()
        passes(dataset, args.epochs, data_epoch)
        rate = args.epochs * len(x_train) / (time.perf_counter() - start)
        workers = f", workers={dataset.threads}" if kind == "numpy" else ""
        print(f"{kind} training pipeline alone (shuffle, crop, flip, batch {args.batch_size}{workers}): {rate:,.0f} img/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

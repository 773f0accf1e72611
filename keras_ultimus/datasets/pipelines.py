"""Pick the input pipeline (tf.data, NumPy or device) and build training and evaluation data with it.

`train_data` and `eval_data` are the one entry point for `train` and the tuner.
`auto` takes tf.data where TensorFlow imports, else the NumPy `PyDataset`
pipeline, which needs no TensorFlow. `device` keeps the images on the
accelerator (`keras_ultimus.datasets.device`). This module imports no TensorFlow itself.
"""

from collections.abc import Callable

import keras
import numpy as np

from keras_ultimus.constants import PIPELINES
from keras_ultimus.datasets.batching import default_workers
from keras_ultimus.errors import UserError

KINDS = PIPELINES


def tensorflow_importable() -> bool:
    """Whether `import tensorflow` succeeds in this process (a stub that raises counts as absent)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(kind: str = "auto") -> str:
    """The pipeline to use, "tfdata", "numpy" or "device": `auto` picks tfdata when TensorFlow imports."""
    if kind not in KINDS:
        raise UserError(f"unknown pipeline {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind in ("numpy", "device"):
        return kind
    if tensorflow_importable():
        return "tfdata"
    if kind == "tfdata":
        raise UserError(
            "the tfdata pipeline needs TensorFlow, which can't be imported here; use pipeline='numpy'"
        )
    return "numpy"


class DataEpoch(keras.callbacks.Callback):
    """Tell the training pipeline which epoch `fit` starts, so its data order is a function of (seed, epoch).

    `fit` calls `on_epoch_begin(epoch)` before it creates that epoch's iterator
    (also after `BackupAndRestore` restored a run), on every backend.

    Args:
        set_epoch: callable taking the epoch number, from `train_data`.
    """

    def __init__(self, set_epoch: Callable[[int], None]):
        super().__init__()
        self.set_epoch = set_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.set_epoch(epoch)


def train_data(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int = 0,
    augment: bool = True,
    kind: str = "auto",
    workers: int | None = None,
) -> tuple[object, DataEpoch]:
    """The shuffled (and augmented) training data, and the `DataEpoch` callback to pass to `fit` with it.

    Use both as `model.fit(dataset, shuffle=False, callbacks=[data_epoch, ...])`:
    the pipeline shuffles itself, by (seed, epoch); `fit`'s own shuffle would
    reorder NumPy batches with Python's global `random`. `workers` (NumPy
    pipeline only) defaults to `default_workers()`; 0 computes batches in the
    training thread.
    """
    kind = resolve(kind)
    if kind == "tfdata":
        from keras_ultimus.datasets import tfdata

        dataset, epoch = tfdata.train_dataset(images, labels, batch_size, seed, augment)
        return dataset, DataEpoch(epoch.assign)
    if kind == "device":
        from keras_ultimus.datasets.device import DeviceBatches

        dataset = DeviceBatches(images, labels, batch_size, seed, training=True, augment=augment)
        return dataset, DataEpoch(dataset.set_epoch)
    from keras_ultimus.datasets.pydataset import ArrayBatches

    workers = default_workers() if workers is None else workers
    dataset = ArrayBatches(
        images, labels, batch_size, seed, training=True, augment=augment, workers=workers
    )
    return dataset, DataEpoch(dataset.set_epoch)


def eval_data(
    images: np.ndarray, labels: np.ndarray, batch_size: int, kind: str = "auto"
) -> object:
    """Evaluation data in the arrays' order, float32 0-255 images with int32 labels."""
    kind = resolve(kind)
    if kind == "tfdata":
        from keras_ultimus.datasets import tfdata

        return tfdata.eval_dataset(images, labels, batch_size)
    if kind == "device":
        from keras_ultimus.datasets.device import DeviceBatches

        return DeviceBatches(images, labels, batch_size)
    from keras_ultimus.datasets.pydataset import ArrayBatches

    return ArrayBatches(images, labels, batch_size, training=False)

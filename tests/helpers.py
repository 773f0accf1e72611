"""Shared test helpers: fake CIFAR-10 files in the official binary layout, test images, NumPy references.

Fixtures live in conftest.py; test modules import these helpers with `from tests.helpers import ...`.
"""

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from keras_ultimus.datasets.fake_data import (  # noqa: F401  (tests import them from here)
    CIFAR10_FILES,
    RECORD_BYTES,
    fake_batch,
    write_fake_folder,
    write_fake_tarball,
)


def smooth_images(n: int, seed: int = 0) -> np.ndarray:
    """Blocky uint8 images (8x8-pixel patches): unlike pixel noise, they move an untrained model's logits."""
    low = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3)).astype(np.uint8)
    return low.repeat(8, axis=1).repeat(8, axis=2)


def random_arrays(n_train: int = 64, n_test: int = 32):
    """Random uint8 images and labels as `((x_train, y_train), (x_test, y_test))`, seeded."""
    rng = np.random.default_rng(0)
    return (
        (rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_train)),
        (rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_test)),
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    """NumPy reference softmax over the last axis."""
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def keras_probabilities(model, images: np.ndarray) -> np.ndarray:
    """Reference: the Keras model's logits on float pixels, softmaxed in NumPy."""
    import keras

    logits = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    return softmax(logits.astype(np.float64))


def assert_same_log(run: Path, reference: Path) -> None:
    """A resumed run's log.csv equals an uninterrupted run's: exactly on TensorFlow, to 1e-3 elsewhere."""
    columns = ["epoch", "accuracy", "loss", "val_accuracy", "val_loss", "learning_rate"]
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "log.csv")[columns],
        pd.read_csv(reference / "log.csv")[columns],
        check_exact=os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow",
        rtol=1e-3,
        atol=1e-4,
    )


def computed_once(tmp_path_factory, name: str, compute: Callable[[Path], None]) -> Path:
    """A folder that `compute(folder)` fills once per test run, however many xdist workers ask for it.

    The workers of one run share their base temp folder's parent; the first to take the lock computes, the
    others wait for it and reuse the folder. A failed `compute` leaves no "done" mark, so the next one retries.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").exists():
            folder.mkdir(exist_ok=True)
            compute(folder)
            (folder / "done").touch()
    return folder

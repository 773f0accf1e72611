"""Shared test helpers: fake CIFAR-10 files in the official binary layout, test images, NumPy references.

Fixtures live in conftest.py; test modules import these helpers with `from tests.helpers import ...`.
"""

import numpy as np

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


def softmax(logits: np.ndarray) -> np.ndarray:
    """NumPy reference softmax over the last axis."""
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def keras_probabilities(model, images: np.ndarray) -> np.ndarray:
    """Reference: the Keras model's logits on float pixels, softmaxed in NumPy."""
    import keras

    logits = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    return softmax(logits.astype(np.float64))

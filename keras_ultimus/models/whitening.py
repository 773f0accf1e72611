"""airbench's frozen whitening conv: its kernel from the training images' 2x2 patches, set into a built model."""

import keras
import numpy as np

from keras_ultimus.constants import CIFAR10_MEAN, CIFAR10_STD

# The frozen whitening conv: 2x2 patches of 3 channels (12 dimensions), each eigen-direction with both signs.
WHITEN_PATCH = 2
WHITEN_WIDTH = 2 * WHITEN_PATCH * WHITEN_PATCH * 3
WHITEN_IMAGES = 5_000  # training images whose patches give the covariance


def whitening_kernel(images: np.ndarray, eps: float = 5e-4) -> np.ndarray:
    """The `whiten` conv's kernel for `images` (uint8 NHWC): each output channel is a whitened 2x2 patch direction.

    Patches of the normalised images have covariance C = V diag(l) V^T; the kernel holds V diag(l + eps)^-1/2
    and its negation, so its outputs have (nearly) unit variance and no correlation, in both signs (GELU follows).
    """
    k, channels = WHITEN_PATCH, images.shape[-1]
    dims = k * k * channels
    total, outer, count = np.zeros(dims), np.zeros((dims, dims)), 0
    for start in range(0, len(images), 500):  # about 50 MB of patches at a time
        x = (np.asarray(images[start : start + 500], np.float64) - CIFAR10_MEAN) / CIFAR10_STD
        patches = np.lib.stride_tricks.sliding_window_view(
            x, (k, k), axis=(1, 2)
        )  # (n, h', w', c, k, k)
        patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(
            -1, dims
        )  # (kh, kw, c), a Conv2D kernel's order
        total, outer, count = (
            total + patches.sum(axis=0),
            outer + patches.T @ patches,
            count + len(patches),
        )
    mean = total / count
    eigenvalues, eigenvectors = np.linalg.eigh(outer / count - np.outer(mean, mean))
    directions = eigenvectors / np.sqrt(eigenvalues + eps)
    return (
        np.concatenate([directions, -directions], axis=1)
        .reshape(k, k, channels, -1)
        .astype(np.float32)
    )


def set_whitening(model: keras.Model, images: np.ndarray) -> None:
    """Set the frozen `whiten` conv of `model`, if it has one, from the first `WHITEN_IMAGES` training images."""
    layer = next((layer for layer in model.layers if layer.name == "whiten"), None)
    if layer is not None:
        layer.kernel.assign(whitening_kernel(images[:WHITEN_IMAGES]))

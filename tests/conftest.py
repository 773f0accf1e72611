"""Shared fixtures: small fake CIFAR-10 copies in the official binary format."""

import io
import os
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ultimus.data import TEST_FILE, TRAIN_FILES
from keras_ultimus.model import build_model

REAL_DATA = os.environ.get("CIFAR10_PATH")


def fake_batch(n: int, seed: int) -> bytes:
    """`n` random records: 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, size=(n, 3073), dtype=np.uint8)
    records[:, 0] = np.arange(n) % 10
    return records.tobytes()


def write_fake_folder(root: Path, per_file: int = 20) -> Path:
    """Write a fake `cifar-10-batches-bin/` folder and return it."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i, name in enumerate((*TRAIN_FILES, TEST_FILE)):
        (folder / name).write_bytes(fake_batch(per_file, seed=i))
    return folder


def write_fake_tarball(path: Path, per_file: int = 20) -> Path:
    """Write a fake `cifar-10-binary.tar.gz` in the official layout and return it."""
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate((*TRAIN_FILES, TEST_FILE)):
            raw = fake_batch(per_file, seed=i)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.fixture
def fake_cifar_dir(tmp_path):
    return write_fake_folder(tmp_path)


@pytest.fixture
def fake_cifar_tarball(tmp_path):
    return write_fake_tarball(tmp_path / "cifar-10-binary.tar.gz")


@pytest.fixture
def real_cifar():
    """Path to the real CIFAR-10 copy from $CIFAR10_PATH; skips when absent."""
    if not REAL_DATA or not Path(REAL_DATA).exists():
        pytest.skip("real CIFAR-10 copy not present: set CIFAR10_PATH to cifar-10-binary.tar.gz")
    return REAL_DATA


def smooth_images(n: int, seed: int = 0) -> np.ndarray:
    """Blocky uint8 images (8x8-pixel patches): unlike pixel noise, they move an untrained model's logits."""
    low = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3)).astype(np.uint8)
    return low.repeat(8, axis=1).repeat(8, axis=2)


def softmax(logits: np.ndarray) -> np.ndarray:
    """NumPy reference softmax over the last axis."""
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def keras_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Reference: the Keras model's logits on float pixels, softmaxed in NumPy."""
    return softmax(keras.ops.convert_to_numpy(model(images.astype("float32"), training=False)).astype(np.float64))


@pytest.fixture(scope="module")
def residual_model():
    """A seeded untrained model whose logits differ per image.

    residual=True: an untrained stack of plain Ultimus blocks gives near-identical logits for every image.
    """
    keras.utils.set_random_seed(0)
    return build_model(residual=True)

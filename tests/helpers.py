"""Shared test helpers: fake CIFAR-10 files in the official binary layout, test images, NumPy references.

Fixtures live in conftest.py; test modules import these helpers with `from tests.helpers import ...`.
"""

import io
import tarfile
from pathlib import Path

import numpy as np

# The official binary release's file names, written out here rather than taken from the code under test.
CIFAR10_FILES = (*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin")
RECORD_BYTES = 1 + 32 * 32 * 3


def fake_batch(n: int, seed: int) -> bytes:
    """`n` random records: 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, size=(n, RECORD_BYTES), dtype=np.uint8)
    records[:, 0] = np.arange(n) % 10
    return records.tobytes()


def write_fake_folder(root: Path, per_file: int = 20) -> Path:
    """Write a fake `cifar-10-batches-bin/` folder and return it."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i, name in enumerate(CIFAR10_FILES):
        (folder / name).write_bytes(fake_batch(per_file, seed=i))
    return folder


def write_fake_tarball(path: Path, per_file: int = 20) -> Path:
    """Write a fake `cifar-10-binary.tar.gz` in the official layout and return it."""
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(CIFAR10_FILES):
            raw = fake_batch(per_file, seed=i)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


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

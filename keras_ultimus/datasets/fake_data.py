"""Fake CIFAR-10 files in the official binary layout (random pixels), for tests and the GPU driver's dry run."""

import io
import tarfile
from pathlib import Path

import numpy as np

# The official binary release's file names, written out here rather than taken from the reader (cifar10.py).
CIFAR10_FILES = (*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin")
RECORD_BYTES = 1 + 32 * 32 * 3


def fake_batch(n: int, seed: int) -> bytes:
    """`n` random records: 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, size=(n, RECORD_BYTES), dtype=np.uint8)
    records[:, 0] = np.arange(n) % 10
    return records.tobytes()


def write_fake_folder(root: Path, per_file: int = 20) -> Path:
    """Write a fake `cifar-10-batches-bin/` folder under `root` and return it."""
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i, name in enumerate(CIFAR10_FILES):
        (folder / name).write_bytes(fake_batch(per_file, seed=i))
    return folder


def write_fake_tarball(path: Path, per_file: int = 20) -> Path:
    """Write a fake `cifar-10-binary.tar.gz` in the official layout and return its path."""
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(CIFAR10_FILES):
            raw = fake_batch(per_file, seed=i)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return Path(path)

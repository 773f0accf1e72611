"""Read CIFAR-10 into uint8 NumPy arrays, from a local copy or from TensorFlow Datasets.

A local copy is the official `cifar-10-binary.tar.gz` or its extracted
`cifar-10-batches-bin/` folder, read here without TensorFlow: each record is
1 label byte and 3,072 pixel bytes (R, G, B planes of 32x32). Anything that is
not a readable copy raises `UserError` with one line naming the file.
TensorFlow is imported only by `load_tfds`.
"""

import logging
import lzma
import os
import socket
import tarfile
import zlib
from pathlib import Path

import numpy as np

from keras_ultimus.errors import MissingFileError, UserError, one_line

TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD_BYTES = 1 + 32 * 32 * 3
TFDS_HOST = ("www.cs.toronto.edu", 443)

Arrays = tuple[np.ndarray, np.ndarray]


def decode_batch(raw: bytes, name: str) -> Arrays:
    """Decode official binary records (label byte + R, G, B planes) to NHWC uint8 images and int32 labels."""
    if not raw or len(raw) % RECORD_BYTES:
        raise UserError(
            f"{name}: {len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records"
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise UserError(f"{name}: label {labels[bad]} of record {bad} is out of range 0-9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _read_folder(path: Path) -> dict[str, bytes]:
    """The batch files of an extracted `cifar-10-batches-bin/` folder (or its parent)."""
    folder = path / "cifar-10-batches-bin"
    folder = folder if folder.is_dir() else path
    members = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        if not (folder / name).is_file():
            raise UserError(f"{folder}: missing batch file {name}")
        try:
            members[name] = (folder / name).read_bytes()
        except OSError as e:
            raise UserError(f"{folder / name}: can't read ({e.strerror or one_line(e)})") from None
    return members


def _read_tarball(path: Path) -> dict[str, bytes]:
    """The batch files inside a (compressed) tarball; other members are ignored."""
    wanted = (*TRAIN_FILES, TEST_FILE)
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if not (member.isfile() and name in wanted):
                    continue
                if name in members:
                    raise UserError(f"{path}: tarball holds {name} more than once")
                members[name] = tar.extractfile(member).read()
            while tar.fileobj.read(
                1 << 20
            ):  # to the end, so gzip checks its CRC of everything read
                pass
    except tarfile.ReadError as e:
        if "could not be opened successfully" in str(e):  # one line per compression tried
            raise UserError(
                f"{path}: truncated or corrupt tarball (not a tar or compressed tar file)"
            ) from None
        raise UserError(f"{path}: truncated or corrupt tarball ({one_line(e)})") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, ValueError) as e:
        raise UserError(
            f"{path}: truncated or corrupt tarball ({one_line(e) or type(e).__name__})"
        ) from None
    except OSError as e:  # gzip/bz2/lzma stream errors, and unreadable files
        reason = e.strerror or one_line(e)
        raise UserError(f"{path}: truncated or corrupt tarball ({reason})") from None
    missing = [n for n in wanted if n not in members]
    if missing:
        raise UserError(f"{path}: tarball has no batch file {missing[0]}")
    return members


def check_local_path(path: str | os.PathLike) -> Path:
    """Check, without reading it, that a local copy exists and is no empty file; commands call it first of all."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes); download cifar-10-binary.tar.gz again")
    return path


def load_local(path: str | os.PathLike) -> tuple[Arrays, Arrays]:
    """Load (train, test) arrays from a local copy of the official binary files."""
    path = check_local_path(path)
    members = _read_folder(path) if path.is_dir() else _read_tarball(path)
    train = [decode_batch(members[n], str(path / n)) for n in TRAIN_FILES]
    test = decode_batch(members[TEST_FILE], str(path / TEST_FILE))
    sizes = [len(y) for _, y in train]
    if len(set(sizes)) > 1:  # a batch file cut at a record boundary would otherwise load silently
        short = TRAIN_FILES[sizes.index(min(sizes))]
        raise UserError(
            f"{path / short}: {min(sizes)} records, but another training batch file has {max(sizes)}"
        )
    return (
        (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        test,
    )


def _reachable(host: tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(host, timeout=timeout).close()
        return True
    except OSError:
        return False


def load_tfds(data_dir: str | None = None) -> tuple[Arrays, Arrays]:
    """Load (train, test) arrays through TFDS, downloading only when online."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(
            "no local CIFAR-10 copy given and TensorFlow Datasets is not importable: "
            "pass --data PATH or set CIFAR10_PATH to a local cifar-10-binary.tar.gz"
        ) from None

    def load(download):
        splits = tfds.load(
            "cifar10",
            split=["train", "test"],
            as_supervised=True,
            data_dir=data_dir,
            download=download,
        )
        arrays = []
        for split in splits:
            batches = list(tfds.as_numpy(split.batch(10_000)))
            arrays.append(tuple(np.concatenate(a) for a in zip(*batches)))
        return arrays

    absl, level = logging.getLogger("absl"), logging.getLogger("absl").level
    absl.setLevel(
        logging.ERROR
    )  # TFDS warns "Variant folder ... has no dataset_info.json" before a miss
    try:
        train, test = load(download=False)
    except (AssertionError, tfds.core.registered.DatasetNotFoundError, OSError):
        # Without a network TFDS retries for minutes; fail fast instead.
        if not _reachable(TFDS_HOST):
            raise UserError(
                "cifar10 is not in the TFDS data dir and "
                f"{TFDS_HOST[0]} can't be reached: pass --data PATH or set "
                "CIFAR10_PATH to a local cifar-10-binary.tar.gz"
            ) from None
        absl.setLevel(level)
        train, test = load(download=True)
    finally:
        absl.setLevel(level)
    return (train[0], train[1].astype(np.int32)), (test[0], test[1].astype(np.int32))


def load_cifar10(path: str | os.PathLike | None = None) -> tuple[Arrays, Arrays]:
    """Load (train, test) from `path`, else `$CIFAR10_PATH`, else TFDS."""
    path = path or os.environ.get("CIFAR10_PATH")
    return load_local(path) if path else load_tfds()


def split_validation(
    images: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[Arrays, Arrays]:
    """Split a seeded, reproducible validation set off the training arrays."""
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(len(images) * fraction))
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])

"""CIFAR-10 as in-memory arrays and `tf.data` pipelines.

Two sources: TensorFlow Datasets (`tfds.load("cifar10")`), or a local copy of
the official binary files (`cifar-10-binary.tar.gz` or its extracted
`cifar-10-batches-bin/` folder), read here without TFDS.

`python -m keras_ultimus.data --data PATH` prints the dataset and measures
the pipeline alone (see README for the measured img/s).
"""

import argparse
import os
import socket
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD_BYTES = 1 + 32 * 32 * 3
TFDS_HOST = ("www.cs.toronto.edu", 443)

Arrays = tuple[np.ndarray, np.ndarray]


class DataError(Exception):
    """A data source that can't be read; its message is one line for the user."""


def decode_batch(raw: bytes, name: str) -> Arrays:
    """Decode official binary records (label byte + R, G, B planes) to NHWC uint8."""
    if not raw or len(raw) % RECORD_BYTES:
        raise DataError(
            f"{name}: {len(raw)} bytes is not a whole number of "
            f"{RECORD_BYTES}-byte CIFAR-10 records"
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        raise DataError(f"{name}: label {labels.max()} is out of range 0-9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _read_members(path: Path) -> dict[str, bytes]:
    """Read the CIFAR-10 batch files from a folder or a (gzipped) tarball."""
    wanted = (*TRAIN_FILES, TEST_FILE)
    if path.is_dir():
        folder = path / "cifar-10-batches-bin"
        folder = folder if folder.is_dir() else path
        missing = [n for n in wanted if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{folder}: missing batch file {missing[0]}")
        return {n: (folder / n).read_bytes() for n in wanted}
    members = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted:
                    members[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        reason = str(e) or type(e).__name__
        raise DataError(f"{path}: truncated or corrupt tarball ({reason})") from None
    missing = [n for n in wanted if n not in members]
    if missing:
        raise DataError(f"{path}: tarball has no batch file {missing[0]}")
    return members


def load_local(path: str | os.PathLike) -> tuple[Arrays, Arrays]:
    """Load (train, test) arrays from a local copy of the official binary files."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    members = _read_members(path)
    train = [decode_batch(members[n], str(path / n)) for n in TRAIN_FILES]
    test = decode_batch(members[TEST_FILE], str(path / TEST_FILE))
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
    import tensorflow_datasets as tfds

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

    try:
        train, test = load(download=False)
    except (AssertionError, tfds.core.registered.DatasetNotFoundError, OSError):
        # Without a network TFDS retries for minutes; fail fast instead.
        if not _reachable(TFDS_HOST):
            raise DataError(
                "cifar10 is not in the TFDS data dir and "
                f"{TFDS_HOST[0]} can't be reached: pass --data PATH or set "
                "CIFAR10_PATH to a local cifar-10-binary.tar.gz"
            ) from None
        train, test = load(download=True)
    return (train[0], train[1].astype(np.int32)), (test[0], test[1].astype(np.int32))


def load_cifar10(path: str | os.PathLike | None = None) -> tuple[Arrays, Arrays]:
    """Load (train, test) from `path`, else `$CIFAR10_PATH`, else TFDS."""
    path = path or os.environ.get("CIFAR10_PATH")
    return load_local(path) if path else load_tfds()


def split_validation(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int):
    """Split a seeded, reproducible validation set off the training arrays."""
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(len(images) * fraction))
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Pad-4 reflect, random 32×32 crop and random horizontal flip, per image."""
    batch = tf.shape(images)[0]
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform(
        [2, batch], seed=seed, maxval=9, dtype=tf.int32
    )
    window = tf.range(32)
    rows = offsets[0][:, None] + window
    cols = offsets[1][:, None] + window
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], seed=seed + 1) < 0.5
    return tf.where(flip[:, None, None, None], cropped[:, :, ::-1], cropped)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    training: bool = False,
    augment: bool = True,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batched (float32 0-255 images, int labels) pipeline; shuffles and augments when training."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds.batch(2)).map(
            lambda batch, s: (augment_batch(batch[0], s), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return ds.prefetch(tf.data.AUTOTUNE)


def main(argv: list[str] | None = None) -> int:
    """Print the dataset's shapes and class counts, and time the training pipeline."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_ultimus.data", description=main.__doc__
    )
    parser.add_argument("--data", help="local CIFAR-10 copy (default: $CIFAR10_PATH, else TFDS)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2, help="pipeline passes to time")
    args = parser.parse_args(argv)
    try:
        (x_train, y_train), (x_test, y_test) = load_cifar10(args.data)
    except DataError as e:
        parser.exit(2, f"error: {e}\n")
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        print(f"{split}: {x.shape} {x.dtype}, per class {np.bincount(y).tolist()}")
    ds = make_dataset(x_train, y_train, args.batch_size, training=True)
    for _ in ds.take(1):  # warm-up: builds the pipeline
        pass
    start = time.perf_counter()
    for _ in range(args.epochs):
        for _ in ds:
            pass
    rate = args.epochs * len(x_train) / (time.perf_counter() - start)
    print(f"training pipeline alone (shuffle, crop, flip, batch): {rate:,.0f} img/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The `tf.data` input pipeline: uint8 arrays in memory, batched crop + flip, an epoch-keyed data order.

The shuffle and augmentation of epoch `e` are stateless functions of
`(seed, e)`: the pipeline reads the epoch from a `tf.Variable` once, when an
epoch's iterator starts, so a run resumed at epoch `k` sees what an
uninterrupted run sees. `pipelines.DataEpoch` sets that variable in
`on_epoch_begin`. Keras creates a spare iterator at the end of each epoch
and discards it, so the epoch is only read, never advanced, by the pipeline.

Under the torch or jax backend, importing this module hides every GPU from
TensorFlow first, so tf.data never claims memory the training backend needs.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_ultimus.datasets.batching import batches_per_epoch


def hide_gpus_from_tensorflow(backend: str) -> None:
    """Make TensorFlow see no GPU when another backend trains (TF would otherwise claim GPU memory)."""
    if backend == "tensorflow":
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except (
        RuntimeError
    ):  # TF already initialised its devices (hidden or not): nothing left to change
        pass


hide_gpus_from_tensorflow(keras.backend.backend())

PAD = 4


def reflect(positions: tf.Tensor, size: int) -> tf.Tensor:
    """Map padded coordinates (-PAD..size+PAD-1) into 0..size-1 as reflect padding does (no edge repeat)."""
    positions = tf.abs(positions)
    return tf.where(positions >= size, 2 * (size - 1) - positions, positions)


def pixel_indices(images: tf.Tensor, seed: tf.Tensor | None, size: int = 32) -> tf.Tensor:
    """Flat pixel indices (batch, size, size) of each image's reflect-pad-4 random crop and random flip.

    `images` are indices into the dataset; with `seed` None, the images unchanged.
    One gather with these indices crops, flips and batches in a single step.
    """
    batch = tf.shape(images)[0]
    window = tf.range(size, dtype=tf.int64)
    rows = cols = tf.broadcast_to(window, [batch, size])
    if seed is not None:
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        offsets = (
            tf.random.stateless_uniform(
                [2, batch, 1], seed=crop_seed, maxval=2 * PAD + 1, dtype=tf.int64
            )
            - PAD
        )
        flip = tf.random.stateless_uniform([batch, 1], seed=flip_seed) < 0.5
        rows = reflect(offsets[0] + window, size)
        cols = reflect(offsets[1] + tf.where(flip, size - 1 - window, window), size)
    images = tf.cast(images, tf.int64)
    return (images[:, None, None] * size + rows[:, :, None]) * size + cols[:, None, :]


def epoch_variable() -> tf.Variable:
    """The int64 epoch counter a training dataset reads; kept on the CPU where tf.data runs."""
    with tf.device("/CPU:0"):
        return tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")


def train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int = 0,
    augment: bool = True,
    epoch: tf.Variable | None = None,
) -> tuple[tf.data.Dataset, tf.Variable]:
    """Shuffled (and augmented) batches of (float32 0-255 images, int32 labels); the order depends on (seed, epoch).

    Returns the dataset and the epoch variable it reads: set the variable to
    `e` before iterating to get epoch `e` (`pipelines.DataEpoch` does it in `fit`).
    """
    epoch = epoch_variable() if epoch is None else epoch
    n = len(images)
    num_batches = batches_per_epoch(n, batch_size)
    size, channels = images.shape[1], images.shape[-1]
    pixels = tf.constant(np.ascontiguousarray(images).reshape(-1, channels))
    labels = tf.constant(labels.astype(np.int32))
    seed = tf.constant(seed, tf.int64)

    def batches_of_epoch(e):
        key = tf.stack([seed, e])
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)
        index_batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return tf.data.Dataset.zip(index_batches, tf.data.Dataset.range(num_batches)).map(
            lambda idx, b: (idx, tf.random.experimental.stateless_fold_in(key, b))
        )

    def load(idx, key):
        x = tf.gather(pixels, pixel_indices(idx, key if augment else None, size))
        return tf.cast(x, tf.float32), tf.gather(labels, idx)

    ds = tf.data.Dataset.from_tensors(0).map(
        lambda _: epoch.read_value()
    )  # once, as an iterator starts
    ds = ds.flat_map(batches_of_epoch)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))
    return ds.prefetch(tf.data.AUTOTUNE), epoch


def eval_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of (float32 0-255 images, int32 labels) in the arrays' order, for evaluation."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))).batch(batch_size)
    return ds.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)

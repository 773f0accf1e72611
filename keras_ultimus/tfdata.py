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


def hide_gpus_from_tensorflow(backend: str) -> None:
    """Make TensorFlow see no GPU when another backend trains (TF would otherwise claim GPU memory)."""
    if backend == "tensorflow":
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF already initialised its devices (hidden or not): nothing left to change
        pass


hide_gpus_from_tensorflow(keras.backend.backend())

PAD = 4


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Reflect-pad 4, random 32x32 crop and random horizontal flip, per image, keyed by a stateless `seed` pair."""
    batch = tf.shape(images)[0]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([2, batch], seed=crop_seed, maxval=2 * PAD + 1, dtype=tf.int32)
    window = tf.range(32)
    rows = offsets[0][:, None] + window
    cols = offsets[1][:, None] + window
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], seed=flip_seed) < 0.5
    return tf.where(flip[:, None, None, None], cropped[:, :, ::-1], cropped)


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
    num_batches = -(-n // batch_size)
    images = tf.constant(images)
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
        x = tf.gather(images, idx)
        if augment:
            x = augment_batch(x, key)
        return tf.cast(x, tf.float32), tf.gather(labels, idx)

    ds = tf.data.Dataset.from_tensors(0).map(lambda _: epoch.read_value())  # once, as an iterator starts
    ds = ds.flat_map(batches_of_epoch)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))
    return ds.prefetch(tf.data.AUTOTUNE), epoch


def eval_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of (float32 0-255 images, int32 labels) in the arrays' order, for evaluation."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))).batch(batch_size)
    return ds.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)

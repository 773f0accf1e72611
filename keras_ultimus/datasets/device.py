"""The device input pipeline (`--pipeline device`): the uint8 images live on the accelerator, and every batch is
gathered, cropped, flipped and cast there with `keras.ops`, on any backend.

Which images a batch holds and how each is cropped and flipped is drawn on the host exactly as the NumPy pipeline
draws it, keyed by (seed, epoch, batch); only those few indices (65 per image) cross to the device, never pixels.
So a batch equals the NumPy pipeline's bit for bit, a resumed run sees the batches an uninterrupted one sees, and
`DataEpoch` drives it as it drives the others.
"""

import numpy as np
from keras import ops

from keras_ultimus.datasets.pydataset import ArrayBatches


class DeviceBatches(ArrayBatches):
    """`ArrayBatches` whose pixels and labels are device tensors; batches come out as device tensors.

    Args:
        images: uint8 array `(n, 32, 32, 3)`, copied to the device once.
        labels: int array `(n,)`, copied to the device once.
        batch_size: int. Images per batch; the last batch may be smaller.
        seed: int. Keys the shuffle and the augmentation. Defaults to `0`.
        training: bool. Shuffle (and augment) per epoch; `False` keeps the arrays' order. Defaults to `False`.
        augment: bool. Reflect-pad-4 random crop and horizontal flip when training. Defaults to `True`.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int = 0,
        training: bool = False,
        augment: bool = True,
    ):
        super().__init__(images, labels, batch_size, seed, training, augment, workers=0)
        self._device_pixels = ops.convert_to_tensor(
            self._pixels
        )  # (n * 32 * 32, channels): one row per pixel
        self._device_labels = ops.convert_to_tensor(self.labels)

    def batch(self, epoch: int, index: int) -> tuple[object, object]:
        """Batch `index` of `epoch` as (float32 0-255 images, int32 labels), both on the device."""
        idx, crops = self.sources(epoch, index)
        if isinstance(idx, slice):
            idx = np.arange(len(self.labels))[idx]
        size = self.images.shape[1]
        images = ops.convert_to_tensor(idx.astype(np.int32))
        if crops is None:  # whole images: each one's pixel rows in order
            flat = images[:, None] * (size * size) + ops.arange(size * size, dtype="int32")
        else:
            rows, cols = (ops.convert_to_tensor(c.astype(np.int32)) for c in crops)
            flat = (images[:, None, None] * size + rows[:, :, None]) * size + cols[:, None, :]
        x = ops.take(self._device_pixels, ops.reshape(flat, (-1,)), axis=0)
        x = ops.reshape(x, (len(idx), size, size, self.images.shape[-1]))
        return ops.cast(x, "float32"), ops.take(self._device_labels, images, axis=0)

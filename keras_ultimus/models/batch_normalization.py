"""Keras' BatchNormalization, calling torch's fused kernel on the torch backend."""

import keras


@keras.saving.register_keras_serializable(package="keras_ultimus")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose torch path is one fused `torch.nn.functional.batch_norm`.

    Same arguments, weights, config and math as Keras' layer: the moving
    statistics follow Keras' rule (`moving = moving * momentum + batch *
    (1 - momentum)`, with the biased batch variance), not torch's. The class
    keeps Keras' name, so weight files address its variables as they address
    Keras' and a model saved with either layer loads with the other. On other
    backends, or with options the fused kernel lacks (`synchronized`, `renorm`,
    a mask, a channel axis other than the last), it is Keras' layer unchanged.

    Args:
        **kwargs: the arguments of `keras.layers.BatchNormalization`.

    Example:

    ```python
    inputs = keras.Input(shape=(8, 8, 16))
    outputs = BatchNormalization(momentum=0.9)(inputs)
    keras.Model(inputs, outputs)(np.random.rand(2, 8, 8, 16))  # shape (2, 8, 8, 16)
    ```

    References:
        keras-team/keras#21313 (backend-specific kernels for Keras layers).
    """

    def _fused(self, inputs, mask) -> bool:
        axis = self.axis if self.axis >= 0 else self.axis + len(inputs.shape)
        return (
            keras.backend.backend() == "torch"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and axis == len(inputs.shape) - 1
            and len(inputs.shape) >= 2
        )

    def call(self, inputs, training=None, mask=None):
        learning = bool(training) and self.trainable
        # torch refuses batch statistics of one value per channel; Keras' ops give them a variance of 0.
        if not self._fused(inputs, mask) or (learning and inputs.numel() <= inputs.shape[-1]):
            return super().call(inputs, training=training, mask=mask)
        import torch.nn.functional as F

        # Keras' channel-last tensor, seen as torch's channels-first one: a view in torch's channels_last
        # memory format, which the fused kernel reads without a copy.
        order = (0, inputs.ndim - 1, *range(1, inputs.ndim - 1))
        back = (0, *range(2, inputs.ndim), 1)
        x = inputs.float().permute(
            order
        )  # upcast as Keras does: float16/bfloat16 statistics overflow
        gamma = self.gamma.value.float() if self.scale else None
        beta = self.beta.value.float() if self.center else None
        if learning:
            channels = x.shape[1]
            count = x.numel() // channels
            mean = x.new_zeros(channels)
            variance = x.new_ones(channels)
            # momentum=1 makes torch write this batch's mean and unbiased variance into the scratch buffers.
            outputs = F.batch_norm(x, mean, variance, gamma, beta, True, 1.0, self.epsilon)
            biased = variance * ((count - 1) / count)
            self.moving_mean.assign(
                self.moving_mean.value * self.momentum + mean * (1.0 - self.momentum)
            )
            self.moving_variance.assign(
                self.moving_variance.value * self.momentum + biased * (1.0 - self.momentum)
            )
        else:
            outputs = F.batch_norm(
                x,
                self.moving_mean.value.float(),
                self.moving_variance.value.float(),
                gamma,
                beta,
                False,
                0.0,
                self.epsilon,
            )
        return keras.ops.cast(outputs.permute(back), self.compute_dtype)

"""Keras' Conv2D, convolving torch's channels_last memory format in place on the torch backend."""

import keras


@keras.saving.register_keras_serializable(package="keras_ultimus")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose torch path hands the NHWC tensor to torch's conv without copying it.

    Keras' torch backend copies each channels-last input to NCHW and back to
    torch's channels_last memory format before convolving
    (keras-team/keras#18457). An NHWC tensor seen through `permute(0, 3, 1, 2)`
    already is a channels_last NCHW tensor, so this layer passes that view
    straight to `torch.nn.functional.conv2d`, and the output's inverse view is
    NHWC again. Arguments, weights (the kernel stays `(kh, kw, in, out)`),
    config and math are Keras'; the class keeps Keras' name so weight files
    address it as they address Keras' layer. On other backends, or with options
    this path lacks (channels_first, groups, "same" padding with a stride or
    an even kernel), or inside `torch.compile`, it is Keras' layer unchanged.

    Args:
        **kwargs: the arguments of `keras.layers.Conv2D`.

    Example:

    ```python
    inputs = keras.Input(shape=(32, 32, 3))
    outputs = Conv2D(16, 3)(inputs)
    keras.Model(inputs, outputs)(np.random.rand(2, 32, 32, 3))  # shape (2, 30, 30, 16)
    ```

    References:
        keras-team/keras#18457 (NHWC<->NCHW copies around torch convolutions).
    """

    def _padding(self):
        """torch's `padding` argument for this layer, or None where the fast path doesn't apply."""
        if (
            keras.backend.backend() != "torch"
            or self.data_format != "channels_last"
            or self.groups != 1
        ):
            return None
        import torch

        if (
            torch.compiler.is_compiling()
        ):  # inductor plans the layout itself, and fails on this view (torch 2.13)
            return None
        if self.padding == "valid":
            return 0
        odd = all(k % 2 for k in self.kernel_size)
        if self.padding == "same" and odd and tuple(self.strides) == (1, 1):
            return tuple(d * (k // 2) for k, d in zip(self.kernel_size, self.dilation_rate))
        return None

    def convolution_op(self, inputs, kernel):
        padding = self._padding()
        if padding is None:
            return super().convolution_op(inputs, kernel)
        import torch
        import torch.nn.functional as F

        inputs, kernel = keras.ops.convert_to_tensor(inputs), keras.ops.convert_to_tensor(kernel)
        weight = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        outputs = F.conv2d(
            inputs.permute(0, 3, 1, 2),
            weight,
            stride=tuple(self.strides),
            padding=padding,
            dilation=tuple(self.dilation_rate),
        )
        return outputs.permute(0, 2, 3, 1)

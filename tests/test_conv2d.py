"""Conv2D (no layout copies on torch): outputs and gradients against NumPy and Keras' layer; Keras' weights,
config and weight-file paths."""

import keras
import numpy as np
import pytest

from keras_ultimus.models.conv2d import Conv2D

pytestmark = pytest.mark.multi_backend


def numpy_conv(x, kernel, stride, padding):
    """Independent reference: a direct NHWC convolution, kernel (kh, kw, in, out)."""
    kh, kw = kernel.shape[:2]
    if padding == "same":
        x = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            y[:, i, j] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return y


def output_and_input_gradient(layer, x, dy):
    """The layer's output and the gradient of sum(output * dy) for its input, through the backend."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        y = layer(xt)
        (gx,) = torch.autograd.grad((y * torch.tensor(dy)).sum(), [xt])
        return y.detach().numpy(), gx.numpy()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(layer(xt) * dy)
        return layer(xt).numpy(), tape.gradient(loss, xt).numpy()
    import jax

    y, vjp = jax.vjp(lambda v: layer(v), x)
    return np.asarray(y), np.asarray(vjp(dy)[0])


@pytest.mark.parametrize("stride, padding", [(1, "valid"), (2, "valid"), (1, "same"), (2, "same")])
def test_outputs_and_gradients_match_numpy_and_keras(stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 7, 3)).astype("float32")
    ours = Conv2D(4, 3, strides=stride, padding=padding, use_bias=False)
    theirs = keras.layers.Conv2D(4, 3, strides=stride, padding=padding, use_bias=False)
    ours.build(x.shape)
    theirs.build(x.shape)
    kernel = rng.standard_normal((3, 3, 3, 4)).astype("float32")
    ours.set_weights([kernel])
    theirs.set_weights([kernel])
    y_ours, gx_ours = output_and_input_gradient(
        ours, x, np.ones(ours.compute_output_shape(x.shape), "float32")
    )
    y_theirs, gx_theirs = output_and_input_gradient(theirs, x, np.ones(y_ours.shape, "float32"))
    np.testing.assert_allclose(y_ours, y_theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_ours, gx_theirs, rtol=1e-5, atol=1e-5)
    if (
        padding == "valid" or stride == 1
    ):  # "same" with a stride pads asymmetrically: Keras' own path
        np.testing.assert_allclose(
            y_ours, numpy_conv(x, kernel, stride, padding), rtol=1e-4, atol=1e-4
        )
        # The input gradient of sum(y) is each pixel's count of windows times the kernel summed over outputs.
        ones = numpy_conv(np.ones_like(x), kernel, stride, padding)
        assert gx_ours.sum() == pytest.approx(ones.sum(), rel=1e-4)


def test_weights_config_and_weight_file_paths_are_keras_own():
    kwargs = {"filters": 8, "kernel_size": 3, "use_bias": False, "name": "conv"}
    ours, theirs = Conv2D(**kwargs), keras.layers.Conv2D(**kwargs)
    for layer in (ours, theirs):
        layer.build((None, 8, 8, 3))
    assert ours.get_config() == theirs.get_config()
    assert [(v.path, v.shape) for v in ours.weights] == [(v.path, v.shape) for v in theirs.weights]
    assert type(ours).__name__ == "Conv2D"  # weight files address layers by class name

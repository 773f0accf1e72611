"""BatchNormalization (torch's fused kernel on torch): outputs, gradients and moving statistics against NumPy and
Keras' layer; the same weights, config and weight-file paths as Keras' layer."""

import keras
import numpy as np
import pytest

from keras_ultimus.models.batch_normalization import BatchNormalization

pytestmark = pytest.mark.multi_backend
EPS, MOMENTUM = 1e-3, 0.9


def numpy_batchnorm(x, gamma, beta, moving_mean, moving_var, dy, training):
    """Independent reference: outputs, (dx, dgamma, dbeta) for upstream `dy`, and the new moving statistics."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    if training:
        mean, var = (
            x.mean(axes),
            x.var(axes),
        )  # the biased variance, as Keras updates the moving one with
        moving_mean = moving_mean * MOMENTUM + mean * (1 - MOMENTUM)
        moving_var = moving_var * MOMENTUM + var * (1 - MOMENTUM)
    else:
        mean, var = moving_mean, moving_var
    inv = 1 / np.sqrt(var + EPS)
    xhat = (x - mean) * inv
    y = gamma * xhat + beta
    dxhat = dy * gamma
    if training:
        dx = inv / n * (n * dxhat - dxhat.sum(axes) - xhat * (dxhat * xhat).sum(axes))
    else:
        dx = dxhat * inv
    return y, (dx, (dy * xhat).sum(axes), dy.sum(axes)), (moving_mean, moving_var)


def gradients(layer, x, dy, training):
    """Outputs and the gradients of sum(outputs * dy) for the input, gamma and beta, through the backend."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        y = layer(xt, training=training)
        grads = torch.autograd.grad(
            (y * torch.tensor(dy)).sum(), [xt, layer.gamma.value, layer.beta.value]
        )
        return y.detach().numpy(), [g.numpy() for g in grads]
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=training)
            loss = tf.reduce_sum(y * dy)
        grads = tape.gradient(loss, [xt, layer.gamma.value, layer.beta.value])
        return y.numpy(), [g.numpy() for g in grads]
    import jax

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(xv, tv):
        y, new = layer.stateless_call(tv, non_trainable, xv, training=training)
        return (y * dy).sum(), (y, new)

    (_, (y, new)), (gx, (ggamma, gbeta)) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        x, trainable
    )
    for variable, value in zip(layer.non_trainable_variables, new):
        variable.assign(value)
    return np.asarray(y), [np.asarray(gx), np.asarray(ggamma), np.asarray(gbeta)]


@pytest.mark.parametrize("training", [True, False])
def test_outputs_gradients_and_moving_statistics_match_numpy_and_keras(training):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 5, 6, 3)) * [1, 3, 0.5] + [0, 2, -1]).astype("float32")
    dy = rng.standard_normal(x.shape).astype("float32")
    ours = BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    theirs = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    for layer in (ours, theirs):
        layer.build(x.shape)
    start = [
        rng.uniform(0.5, 2, 3).astype("float32"),
        rng.standard_normal(3).astype("float32"),
        rng.standard_normal(3).astype("float32"),
        rng.uniform(0.5, 2, 3).astype("float32"),
    ]
    ours.set_weights(start)
    theirs.set_weights(start)
    y_ref, grads_ref, moving_ref = numpy_batchnorm(x, *start, dy, training)
    for layer in (ours, theirs):
        y, grads = gradients(layer, x, dy, training)
        np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
        for got, want in zip(grads, grads_ref):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
        moving = [keras.ops.convert_to_numpy(v) for v in (layer.moving_mean, layer.moving_variance)]
        np.testing.assert_allclose(moving[0], moving_ref[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(moving[1], moving_ref[1], rtol=1e-5, atol=1e-6)


def test_mixed_precision_output_has_the_compute_dtype_and_keras_values():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 4, 4, 2)).astype("float32")
    ours = BatchNormalization(dtype="mixed_bfloat16")
    theirs = keras.layers.BatchNormalization(dtype="mixed_bfloat16")
    y_ours, y_theirs = ours(x, training=True), theirs(x, training=True)
    assert keras.backend.standardize_dtype(y_ours.dtype) == "bfloat16"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(y_ours, "float32")),
        keras.ops.convert_to_numpy(keras.ops.cast(y_theirs, "float32")),
        atol=2e-2,
    )


def test_weights_config_and_weight_file_paths_are_keras_own(tmp_path):
    kwargs = {"momentum": 0.9, "epsilon": 1e-3, "name": "bn"}
    ours, theirs = BatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    for layer in (ours, theirs):
        layer.build((None, 4, 4, 3))
    assert ours.get_config() == theirs.get_config()
    assert [(v.path, v.shape, v.trainable) for v in ours.weights] == [
        (v.path, v.shape, v.trainable) for v in theirs.weights
    ]
    assert type(ours).__name__ == "BatchNormalization"  # weight files address layers by class name


def model_with(bn_class, conv_class=keras.layers.Conv2D):
    inputs = keras.Input((6, 6, 3))
    x = conv_class(4, 3, name="conv")(inputs)
    x = bn_class(momentum=0.9, name="bn")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


@pytest.mark.parametrize(
    "save_with, load_into",
    [
        (BatchNormalization, keras.layers.BatchNormalization),
        (keras.layers.BatchNormalization, BatchNormalization),
    ],
)
def test_saved_model_and_weights_load_either_way(tmp_path, save_with, load_into):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 6, 6, 3)).astype("float32")
    saved = model_with(save_with)
    saved(x, training=True)  # the moving statistics move
    saved.save(tmp_path / "m.keras")
    saved.save_weights(tmp_path / "m.weights.h5")
    want = keras.ops.convert_to_numpy(saved(x, training=False))
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)), want, rtol=1e-5, atol=1e-6
    )
    other = model_with(load_into)
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(other(x, training=False)), want, rtol=1e-5, atol=1e-6
    )

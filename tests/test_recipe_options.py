"""The recipe options: each changes training as named, round-trips, and leaves the reference recipe alone by default."""

import argparse

import keras
import numpy as np
import pytest

from keras_ultimus.config import RecipeOptions
from keras_ultimus.flags import add_flags
from keras_ultimus.training import callbacks, compiling
from keras_ultimus.training.evaluation import accuracies
from keras_ultimus.training.losses import SmoothedSparseCrossentropy

pytestmark = pytest.mark.multi_backend


def numpy_smoothed_crossentropy(labels: np.ndarray, logits: np.ndarray, smoothing: float) -> float:
    logits = logits.astype(np.float64)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    targets = np.full(logits.shape, smoothing / logits.shape[1])
    targets[np.arange(len(labels)), labels] += 1 - smoothing
    return float(-(targets * log_probs).sum(1).mean())


def test_label_smoothing_loss_matches_numpy_and_round_trips():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 10)).astype("float32") * 3, rng.integers(0, 10, 6)
    loss = SmoothedSparseCrossentropy(0.2)
    got = float(keras.ops.convert_to_numpy(loss(labels, logits)))
    assert got == pytest.approx(numpy_smoothed_crossentropy(labels, logits, 0.2), rel=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, SmoothedSparseCrossentropy) and restored.label_smoothing == 0.2


def test_the_default_options_compile_the_reference_recipe():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    compiling.compile_model(model, max_lr=0.01, total_steps=8, jit="off")
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.Adam) and not isinstance(
        optimizer, keras.optimizers.AdamW
    )
    assert not optimizer.use_ema
    assert model.optimizer.weight_decay is None
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert callbacks.recipe_callbacks(RecipeOptions()) == []


def test_sgd_is_nesterov_with_the_given_momentum():
    optimizer = compiling.make_optimizer(0.1, RecipeOptions(optimizer="sgd", momentum=0.85))
    assert (
        isinstance(optimizer, keras.optimizers.SGD)
        and optimizer.nesterov
        and optimizer.momentum == 0.85
    )


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_weight_decay_shrinks_kernels_but_not_batchnorm_or_biases(name):
    optimizer = compiling.make_optimizer(0.1, RecipeOptions(optimizer=name, weight_decay=0.5))
    if name == "adam":
        assert isinstance(optimizer, keras.optimizers.AdamW)
    weights = {
        n: keras.Variable(np.ones(3, "float32"), name=n)
        for n in ("kernel", "gamma", "beta", "bias")
    }
    optimizer.apply_gradients(
        [(keras.ops.zeros(3), v) for v in weights.values()]
    )  # zero gradients: decay only
    after = {n: keras.ops.convert_to_numpy(v) for n, v in weights.items()}
    np.testing.assert_allclose(after["kernel"], 1 - 0.1 * 0.5, rtol=1e-6)  # decoupled: lr * wd
    for n in ("gamma", "beta", "bias"):
        np.testing.assert_array_equal(after[n], 1.0)


def test_ema_weights_are_validated_on_and_end_up_in_the_model():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    options = RecipeOptions(ema=0.9)
    compiling.compile_model(model, max_lr=0.05, total_steps=8, jit="off", options=options)
    start = [keras.ops.convert_to_numpy(w) for w in model.weights]
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        validation_data=(x, y),
        shuffle=False,
        verbose=0,
        callbacks=callbacks.recipe_callbacks(options),
    )
    # The last validation ran on the EMA weights, and fit left the EMA weights in the model.
    assert model.evaluate(x, y, verbose=0)[0] == pytest.approx(
        history.history["val_loss"][-1], rel=1e-5
    )
    # An EMA of momentum 0.9 over 8 steps stays near the start: not the raw weights of the last step.
    moved = [np.abs(keras.ops.convert_to_numpy(w) - s).max() for w, s in zip(model.weights, start)]
    assert 0 < max(moved)


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    kernel = np.random.default_rng(0).normal(size=(48, 10))
    model.layers[-1].set_weights(
        [kernel - kernel.mean(0), np.zeros(10)]
    )  # zero-sum columns: no class always wins
    images = np.random.default_rng(1).integers(0, 256, (50, 4, 4, 3)).astype("uint8")
    labels = np.random.default_rng(2).integers(0, 10, 50)
    flat = images.astype(np.float64).reshape(50, -1)
    mirrored = images[:, :, ::-1].astype(np.float64).reshape(50, -1)
    kernel, bias = (keras.ops.convert_to_numpy(w).astype(np.float64) for w in model.weights)
    plain, tta = flat @ kernel + bias, ((flat + mirrored) @ kernel) / 2 + bias
    got = accuracies(model, images, labels, batch_size=16)
    assert got["test_accuracy"] == pytest.approx(np.mean(plain.argmax(1) == labels))
    assert got["test_accuracy_flip_tta"] == pytest.approx(np.mean(tta.argmax(1) == labels))
    assert (
        plain.argmax(1) != tta.argmax(1)
    ).sum() > 5  # the data tell a plain score from a TTA one


def test_multicrop_tta_adds_the_flip_logits_of_images_moved_a_pixel_with_reflected_edges():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    kernel = np.random.default_rng(0).normal(size=(48, 10))
    model.layers[-1].set_weights([kernel - kernel.mean(0), np.zeros(10)])
    images = np.random.default_rng(1).integers(0, 256, (60, 4, 4, 3)).astype("uint8")
    labels = np.random.default_rng(2).integers(0, 10, 60)
    kernel, bias = (keras.ops.convert_to_numpy(w).astype(np.float64) for w in model.weights)

    def flip_logits(x):
        x = x.astype(np.float64)
        return (x.reshape(len(x), -1) + x[:, :, ::-1].reshape(len(x), -1)) @ kernel / 2 + bias

    def moved(offset):  # pixel (i, j) shows pixel (i + offset, j + offset), reflected at the edges
        index = np.abs(np.arange(4) + offset)
        index = np.where(index > 3, 6 - index, index)
        return images[:, index][:, :, index]

    assert (moved(-1)[:, 0] == images[:, 1][:, [1, 0, 1, 2]]).all()
    want = flip_logits(images) / 2 + (flip_logits(moved(-1)) + flip_logits(moved(1))) / 4
    got = accuracies(model, images, labels, batch_size=16, tta="multicrop")
    assert got["test_accuracy_multicrop_tta"] == pytest.approx(np.mean(want.argmax(1) == labels))
    assert (
        want.argmax(1) != flip_logits(images).argmax(1)
    ).sum() > 3  # it differs from flip TTA here
    assert "test_accuracy_multicrop_tta" not in accuracies(model, images, labels, 16, tta="flip")


def test_options_come_from_a_config_with_defaults_for_older_runs_and_check_their_values():
    assert RecipeOptions.from_config({"seed": 0}) == RecipeOptions()
    assert RecipeOptions.from_config({"ema": 0.99, "tta": "flip"}).ema == 0.99
    for bad in (
        {"optimizer": "rmsprop"},
        {"ema": 1.0},
        {"weight_decay": -1.0},
        {"label_smoothing": "0.1"},
    ):
        with pytest.raises(ValueError):
            RecipeOptions.from_config(bad)


def test_every_option_is_a_flag_with_its_default():
    parser = argparse.ArgumentParser()
    add_flags(parser, list(RecipeOptions.__dataclass_fields__))
    assert vars(parser.parse_args([])) == vars(RecipeOptions())
    args = parser.parse_args(["--optimizer", "sgd", "--label-smoothing", "0.1", "--tta", "flip"])
    assert RecipeOptions.from_config(vars(args)) == RecipeOptions(
        optimizer="sgd", label_smoothing=0.1, tta="flip"
    )

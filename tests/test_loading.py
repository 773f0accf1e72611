"""Loading saved models for inference: one-line errors, and float32 serving of mixed-precision models."""

import keras
import numpy as np
import pytest

from keras_ultimus.errors import UserError
from keras_ultimus.loading import float32_copy, load_keras_model
from keras_ultimus.model import build_model
from tests.helpers import smooth_images


@pytest.fixture
def bf16_model_file(tmp_path):
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(conv_widths=(4, 8), num_blocks=2, residual=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    model.save(tmp_path / "model.keras")
    return tmp_path / "model.keras"


@pytest.mark.multi_backend
def test_a_bf16_trained_model_serves_in_float32_with_the_same_weights(bf16_model_file):
    loaded = load_keras_model(bf16_model_file)
    assert loaded.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"  # as saved
    served = float32_copy(loaded)
    assert {layer.dtype_policy.name for layer in served.layers} == {"float32"}
    for a, b in zip(loaded.get_weights(), served.get_weights()):
        np.testing.assert_array_equal(a, b)
    images = smooth_images(4).astype("float32")
    want = build_model(conv_widths=(4, 8), num_blocks=2, residual=True)  # float32 twin, same weights
    want.set_weights(loaded.get_weights())
    got = keras.ops.convert_to_numpy(served(images))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(want(images)), rtol=1e-5, atol=1e-5)


def test_a_float32_model_is_served_as_it_is(tmp_path):
    model = build_model(conv_widths=(4, 8), num_blocks=1)
    assert float32_copy(model) is model


@pytest.mark.parametrize("name", ["missing.keras", "notes.txt"])
def test_a_path_that_is_no_model_is_a_user_error(tmp_path, name):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UserError, match="not a .keras file"):
        load_keras_model(tmp_path / name)

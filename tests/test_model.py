"""build_model: exact parameter count, layer names, .keras round trip."""

import numpy as np
import pytest

import keras
from keras_ultimus.layers import UltimusLayer
from keras_ultimus.model import build_model

pytestmark = pytest.mark.multi_backend


def trainable_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_reference_model_has_exactly_192778_trainable_parameters():
    assert trainable_count(build_model()) == 192_778


def test_layer_names_and_output_shape():
    model = build_model()
    names = [layer.name for layer in model.layers]
    assert names[:2] == ["images", "normalize"]
    assert names[2:11] == [f"{kind}{i}" for i in (1, 2, 3) for kind in ("conv", "gelu", "bn")]
    assert names[11:] == ["gap", "ultimus1", "ultimus2", "ultimus3", "ultimus4", "logits"]
    assert model.get_layer("conv2").kernel.shape == (3, 3, 32, 256)
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("blocks", [1, 8])
def test_options_reach_the_layers(blocks):
    model = build_model(num_blocks=blocks, key_dim=4, scale="post", residual=True,
                        conv_widths=(8, 16), bn_momentum=0.5)
    ultimus = [layer for layer in model.layers if isinstance(layer, UltimusLayer)]
    assert len(ultimus) == blocks
    assert all((u.key_dim, u.scale, u.residual) == (4, "post", True) for u in ultimus)
    assert model.get_layer("bn2").momentum == 0.5
    assert model.get_layer("conv2").kernel.shape == (3, 3, 8, 16)


def test_keras_round_trip_gives_identical_predictions(tmp_path):
    model = build_model()
    x = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(4), epochs=1, verbose=0)  # moves weights and BN statistics off their init
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert isinstance(loaded.get_layer("ultimus3"), UltimusLayer)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_logits_and_attention_stay_float32_under_mixed_precision(policy, tmp_path):
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model()
        assert model.get_layer("conv2").compute_dtype == policy.removeprefix("mixed_")
        assert model.get_layer("logits").compute_dtype == "float32"
        x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
        assert keras.ops.dtype(model(x)) == "float32"
        path = tmp_path / "m.keras"
        model.save(path)
    finally:
        keras.config.set_dtype_policy("float32")
    loaded = keras.saving.load_model(path)  # under float32, the logits layer keeps its own policy
    assert loaded.get_layer("logits").dtype_policy.name == "float32"
    assert loaded.get_layer("conv2").dtype_policy.name == policy
    assert trainable_count(loaded) == 192_778

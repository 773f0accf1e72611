"""UltimusLayer: math against NumPy, per-sample independence, serialization."""

import keras
import numpy as np
import pytest
from keras import ops
from keras.src import testing

from keras_ultimus.models.layers import UltimusLayer

pytestmark = pytest.mark.multi_backend


def numpy_ultimus(layer: UltimusLayer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: explicit per-sample loops over the 8x8 map."""
    w = {
        d.name: [ops.convert_to_numpy(v) for v in d.weights]
        for d in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)
    }
    d = layer.key_dim
    outs, maps = [], []
    for sample in x.astype(np.float64):
        q = sample @ w["query"][0] + w["query"][1]
        k = sample @ w["key"][0] + w["key"][1]
        v = sample @ w["value"][0] + w["value"][1]
        scores = np.array([[q[i] * k[j] for j in range(d)] for i in range(d)])
        if layer.scale == "pre":
            e = np.exp(scores / np.sqrt(d) - (scores / np.sqrt(d)).max(1, keepdims=True))
            am = e / e.sum(1, keepdims=True)
        else:
            e = np.exp(scores - scores.max(1, keepdims=True))
            am = e / e.sum(1, keepdims=True) / np.sqrt(d)
        z = np.array([sum(v[i] * am[i, j] for i in range(d)) for j in range(d)])
        out = z @ w["output"][0] + w["output"][1]
        outs.append(sample + out if layer.residual else out)
        maps.append(am)
    return np.array(outs), np.array(maps)


class UltimusLayerTest(testing.TestCase):
    def test_layer_basics(self):
        for kwargs in ({}, {"key_dim": 4, "scale": "post", "residual": True}):
            self.run_layer_test(
                UltimusLayer,
                init_kwargs=kwargs,
                input_shape=(2, 48),
                expected_output_shape=(2, 48),
                expected_num_trainable_weights=8,
                expected_num_non_trainable_weights=0,
                supports_masking=False,
            )

    def test_parameter_count_is_1608_for_48_features(self):
        layer = UltimusLayer()
        layer.build((None, 48))
        self.assertEqual(layer.count_params(), 3 * (48 * 8 + 8) + 8 * 48 + 48)

    def test_matches_numpy_reference(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(5, 48)).astype("float32") * 3.0  # large enough for a non-uniform map
        for kwargs in ({}, {"scale": "post"}, {"residual": True, "key_dim": 6}):
            layer = UltimusLayer(**kwargs)
            out, am = layer(x, return_attention_scores=True)
            ref_out, ref_am = numpy_ultimus(layer, x)
            self.assertAllClose(am, ref_am, atol=1e-5)
            self.assertAllClose(out, ref_out, atol=1e-4)
            self.assertGreater(float(np.max(ref_am)), 0.2)

    def test_samples_never_mix(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(4, 48)).astype("float32")
        layer = UltimusLayer()
        before = ops.convert_to_numpy(layer(x))
        changed = x.copy()
        changed[2] = rng.normal(size=48) * 10
        after = ops.convert_to_numpy(layer(changed))
        for i in (0, 1, 3):
            np.testing.assert_array_equal(before[i], after[i])
        self.assertFalse(np.allclose(before[2], after[2]))

    def test_invalid_arguments_raise(self):
        with pytest.raises(ValueError, match="scale"):
            UltimusLayer(scale="middle")
        with pytest.raises(ValueError, match="key_dim"):
            UltimusLayer(key_dim=0)
        with pytest.raises(ValueError, match="batch, features"):
            UltimusLayer().build((None, 4, 48))

    def test_get_config_round_trip(self):
        layer = UltimusLayer(key_dim=5, scale="post", residual=True, name="blk")
        clone = UltimusLayer.from_config(layer.get_config())
        self.assertEqual(
            (clone.key_dim, clone.scale, clone.residual, clone.name), (5, "post", True, "blk")
        )


@pytest.fixture
def policy(request):
    """Set a global dtype policy for one test and restore float32 after it."""
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy("float32")


def test_attention_scores_on_symbolic_inputs_build_a_functional_model(tmp_path):
    inputs = keras.Input(shape=(48,))
    outputs, scores = UltimusLayer(key_dim=6, name="blk")(inputs, return_attention_scores=True)
    assert tuple(outputs.shape) == (None, 48) and tuple(scores.shape) == (None, 6, 6)
    model = keras.Model(inputs, [outputs, scores])
    x = np.random.default_rng(2).normal(size=(3, 48)).astype("float32") * 3.0
    out, am = (ops.convert_to_numpy(t) for t in model(x))
    ref_out, ref_am = numpy_ultimus(model.get_layer("blk"), x)
    np.testing.assert_allclose(am, ref_am, atol=1e-5)
    np.testing.assert_allclose(out, ref_out, atol=1e-4)

    path = tmp_path / "attention.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
def test_attention_softmax_runs_in_float32_under_mixed_precision(policy):
    compute = policy.removeprefix("mixed_")
    inputs = keras.Input(shape=(48,))
    layer = UltimusLayer(name="blk")
    outputs, scores = layer(inputs, return_attention_scores=True)
    assert (outputs.dtype, scores.dtype) == (compute, "float32")
    model = keras.Model(inputs, [outputs, scores])
    x = np.random.default_rng(3).normal(size=(4, 48)).astype("float32") * 3.0
    out, am = model(x)
    assert (ops.dtype(out), ops.dtype(am)) == (compute, "float32")
    assert layer.query_dense.kernel.dtype == "float32"  # variables stay float32
    np.testing.assert_allclose(ops.convert_to_numpy(am).sum(-1), 1.0, atol=1e-6)
    # Only the projections round to the compute dtype: from the layer's own rounded q and k, a float64
    # softmax gives the same map to float32 precision (a softmax in the compute dtype would be ~1e-3 off).
    q, k = (
        ops.convert_to_numpy(ops.cast(dense(x), "float32")).astype(np.float64)
        for dense in (layer.query_dense, layer.key_dense)
    )
    scores = q[:, :, None] * k[:, None, :] / np.sqrt(layer.key_dim)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(ops.convert_to_numpy(am), e / e.sum(-1, keepdims=True), atol=1e-5)


def numpy_batch_and_elementwise(layer: UltimusLayer, x: np.ndarray) -> np.ndarray:
    """Independent reference for the original code's two readings, written with explicit loops."""
    w = {
        d.name: [ops.convert_to_numpy(v) for v in d.weights]
        for d in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)
    }
    x = x.astype(np.float64)
    q, k, v = (x @ w[n][0] + w[n][1] for n in ("query", "key", "value"))
    d, n = layer.key_dim, len(x)
    if layer.attention == "batch":
        scores = np.array(
            [[sum(q[b, i] * k[b, j] for b in range(n)) for j in range(d)] for i in range(d)]
        )
        e = np.exp(scores / np.sqrt(d) - (scores / np.sqrt(d)).max(1, keepdims=True))
        am = e / e.sum(1, keepdims=True)
        z = np.array(
            [[sum(v[b, i] * am[i, j] for i in range(d)) for j in range(d)] for b in range(n)]
        )
    else:
        scores = q * k / np.sqrt(d)
        e = np.exp(scores - scores.max(1, keepdims=True))
        z = v * e / e.sum(1, keepdims=True)
    return z @ w["output"][0] + w["output"][1]


@pytest.mark.parametrize("attention", ["batch", "elementwise"])
def test_the_original_codes_two_attention_readings_match_numpy(attention):
    x = np.random.default_rng(1).normal(size=(6, 48)).astype("float32") * 3.0
    layer = UltimusLayer(attention=attention)
    got = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, numpy_batch_and_elementwise(layer, x), rtol=1e-4, atol=1e-4)
    assert layer.count_params() == 3 * (48 * 8 + 8) + 8 * 48 + 48


def test_batch_attention_mixes_samples_and_the_others_do_not():
    x = np.random.default_rng(2).normal(size=(4, 48)).astype("float32")
    changed = x.copy()
    changed[3] += 5.0
    for attention, mixes in (("sample", False), ("elementwise", False), ("batch", True)):
        layer = UltimusLayer(attention=attention)
        first, second = (ops.convert_to_numpy(layer(a))[:3] for a in (x, changed))
        assert (not np.allclose(first, second, atol=1e-6)) == mixes, attention


def test_attention_round_trips_through_the_config_and_rejects_unknown_kinds():
    layer = UltimusLayer(attention="elementwise")
    assert UltimusLayer.from_config(layer.get_config()).attention == "elementwise"
    with pytest.raises(ValueError, match="attention"):
        UltimusLayer(attention="global")

"""UltimusLayer: math against NumPy, per-sample independence, serialization."""

import numpy as np
import pytest
from keras import ops
from keras.src import testing

from keras_ultimus.layers import UltimusLayer

pytestmark = pytest.mark.multi_backend


def numpy_ultimus(layer: UltimusLayer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: explicit per-sample loops over the 8x8 map."""
    w = {d.name: [ops.convert_to_numpy(v) for v in d.weights] for d in
         (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)}
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

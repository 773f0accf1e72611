"""The original-reproduction probes (benchmarks/repro_probes.py): the head-on-stem model and PyTorch's init."""

import keras
import numpy as np

from benchmarks import repro_probes


def test_head_on_stem_logits_are_the_dense_layer_on_the_pooled_stem():
    keras.utils.set_random_seed(0)
    model = repro_probes.probe_model("stem", "sample")
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 192_778 - 4 * 1_608
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    pooled = keras.Model(model.input, model.get_layer("gap").output)(x)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.get_layer("logits").weights)
    np.testing.assert_allclose(
        model(x), keras.ops.convert_to_numpy(pooled) @ kernel + bias, rtol=1e-5, atol=1e-5
    )


def test_torch_init_draws_kernels_and_biases_within_one_over_root_fan_in_and_leaves_batchnorm():
    keras.utils.set_random_seed(0)
    model = repro_probes.probe_model("blocks", "batch")
    before = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    repro_probes.torch_init(model, seed=0)
    fan_in = {
        "conv1": 27,
        "conv2": 288,
        "conv3": 2304,
        "query": 48,
        "key": 48,
        "value": 48,
        "output": 8,
        "logits": 48,
    }
    redrawn = 0
    for w in model.weights:
        value = keras.ops.convert_to_numpy(w)
        *_, layer, name = w.path.split("/")
        if name not in ("kernel", "bias"):
            np.testing.assert_array_equal(
                value, before[w.path]
            )  # BatchNorm is PyTorch's default already
            continue
        bound = 1 / np.sqrt(fan_in[layer])
        assert 0.7 * bound < np.abs(value).max() <= bound, w.path
        if value.size >= 48:
            assert abs(value.std() - bound / np.sqrt(3)) < 0.3 * bound, (
                w.path
            )  # a uniform draw's std
        redrawn += value.size
    assert redrawn == 192_778 - 2 * (
        32 + 256 + 48
    )  # every trainable weight but BatchNorm's gamma and beta

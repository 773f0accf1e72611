"""build_model: exact parameter count, stem options, argument checks, mixed precision, .keras round trip."""

import keras
import numpy as np
import pytest

from keras_ultimus.models.layers import UltimusLayer
from keras_ultimus.models.ultimus import (
    build_model,
    count_trainable,
    parse_conv_widths,
    parse_downsample,
    stem_plan,
    trainable_params,
)

pytestmark = pytest.mark.multi_backend


def trainable_count(model: keras.Model) -> int:
    """Count the built model's trainable weights, independently of `trainable_params`."""
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
    model = build_model(
        num_blocks=blocks,
        key_dim=4,
        scale="post",
        residual=True,
        conv_widths=(8, 16),
        bn_momentum=0.5,
    )
    ultimus = [layer for layer in model.layers if isinstance(layer, UltimusLayer)]
    assert len(ultimus) == blocks
    assert all((u.key_dim, u.scale, u.residual) == (4, "post", True) for u in ultimus)
    assert model.get_layer("bn2").momentum == 0.5
    assert model.get_layer("conv2").kernel.shape == (3, 3, 8, 16)


def test_keras_round_trip_gives_identical_predictions(tmp_path):
    model = build_model()
    x = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(
        x, np.arange(4), epochs=1, verbose=0
    )  # moves weights and BN statistics off their init
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


def reference_count(widths, num_blocks, key_dim, num_classes=10):
    """Independent hand count: conv kernels + BN gamma/beta, then 4 Dense per block, then the logits."""
    convs = sum(3 * 3 * c_in * c_out + 2 * c_out for c_in, c_out in zip([3, *widths], widths))
    f = widths[-1]
    block = (f + 1) * key_dim * 3 + (key_dim + 1) * f
    return convs + num_blocks * block + (f + 1) * num_classes


STEMS = [
    dict(conv_widths=(32, 256, 48)),
    dict(conv_widths=(16, 32), downsample=("pool",)),
    dict(
        conv_widths=(8, 16, 24, 32), downsample=("stride", "none", "pool"), num_blocks=2, key_dim=4
    ),
    dict(
        conv_widths=(32, 64, 64, 128, 96, 48), downsample=("pool", "none", "stride", "none", "none")
    ),
    dict(conv_widths=(8,) * 6, num_blocks=8, key_dim=16, residual=True, scale="post"),
    dict(conv_widths=(8, 16), num_blocks=0),  # the ablation: pooling, then the logits
]


@pytest.mark.parametrize("kwargs", STEMS)
def test_trainable_params_matches_the_built_model_and_a_hand_count(kwargs):
    model = build_model(**kwargs)
    expected = reference_count(
        list(kwargs["conv_widths"]), kwargs.get("num_blocks", 4), kwargs.get("key_dim", 8)
    )
    assert trainable_count(model) == trainable_params(**kwargs) == expected


def test_pooling_and_stride_shrink_the_feature_map_as_planned():
    kwargs = dict(conv_widths=(8, 16, 24, 32), downsample=("pool", "stride", "none"))
    model = build_model(**kwargs)
    # 32 -conv-> 30 -pool-> 15 -conv-> 13 -conv/2-> 6 -conv-> 4
    assert model.get_layer("pool1").output.shape == (None, 15, 15, 8)
    assert model.get_layer("conv3").strides == (2, 2)
    assert model.get_layer("bn3").output.shape == (None, 6, 6, 24)
    assert model.get_layer("bn4").output.shape == (None, 4, 4, 32)
    assert [size for *_, size in stem_plan(**kwargs)] == [15, 13, 6, 4]
    assert not any(layer.name.startswith("pool") for layer in build_model().layers)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(conv_widths=()), "conv_widths"),
        (dict(conv_widths=(0, 8, 8)), "conv_widths"),
        (dict(conv_widths=(8, 8), downsample=("pool", "pool")), "one entry per gap"),
        (dict(conv_widths=(8, 8), downsample=("avg",)), "downsample"),
        (dict(conv_widths=(8,) * 6, downsample=("pool",) * 5), "smaller than its 3x3 kernel"),
        (dict(num_blocks=-1), "num_blocks"),
        (dict(key_dim=2.5), "key_dim"),
        (dict(scale="mid"), "scale"),
        (dict(bn_momentum=1.0), "bn_momentum"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)
    with pytest.raises(ValueError, match=match):
        trainable_params(**kwargs)


def test_the_faithful_and_quick_models_count_192778_and_233914_trainable_parameters():
    from keras_ultimus.config import QUICK, model_kwargs

    assert trainable_params() == 192_778
    assert trainable_params(**model_kwargs(QUICK)) == 233_914
    assert (
        trainable_params(sync_bn=True) == 192_778
    )  # built without it: only TensorFlow synchronizes


def test_counting_parameters_leaves_the_next_seeded_build_as_it_was():
    count_trainable.cache_clear()  # so that the count builds a model
    keras.utils.set_random_seed(0)
    want = build_model(conv_widths=(4, 8), num_blocks=1).get_weights()
    keras.utils.set_random_seed(0)
    assert trainable_params(conv_widths=(8, 4), num_blocks=2) > 0
    got = build_model(conv_widths=(4, 8), num_blocks=1).get_weights()
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_trainable_params_takes_exactly_build_models_arguments():
    with pytest.raises(TypeError, match="unexpected keyword argument 'width'"):
        trainable_params(width=8)
    with pytest.raises(TypeError, match="positional"):
        trainable_params(4)


def test_flag_parsers():
    assert parse_conv_widths("32,256,48") == [32, 256, 48]
    assert parse_downsample("none,pool,stride") == ["none", "pool", "stride"]
    for bad in ("32,x", "", "0,8", "8,,8"):
        with pytest.raises(ValueError, match="conv widths"):
            parse_conv_widths(bad)
    with pytest.raises(ValueError, match="'max' is not one of none, pool, stride"):
        parse_downsample("none,max")


def resnet_hand_count(widths: list[int], num_blocks: int = 4, key_dim: int = 8) -> int:
    """Independent count for a residual stem: per stage, three 3x3 convs without bias and three BNs."""
    total, c = 0, 3
    for w in widths:
        total += (c * w * 9 + 2 * w) + 2 * (w * w * 9 + 2 * w)
        c = w
    block = 3 * (c * key_dim + key_dim) + key_dim * c + c
    return total + num_blocks * block + c * 10 + 10


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(conv_widths=(16, 32, 64), stem="resnet", num_blocks=1, key_dim=16),
        dict(conv_widths=(8, 8, 8, 8, 8), stem="resnet", pooling="max", attention="elementwise"),
    ],
)
def test_a_resnet_stem_counts_and_shapes_as_planned(kwargs):
    model = build_model(**kwargs)
    assert (
        trainable_count(model)
        == trainable_params(**kwargs)
        == resnet_hand_count(
            list(kwargs["conv_widths"]), kwargs.get("num_blocks", 4), kwargs.get("key_dim", 8)
        )
    )
    stages = len(kwargs["conv_widths"])
    assert model.get_layer(f"stage{stages}_add").output.shape[1:3] == (32 >> stages, 32 >> stages)
    assert model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape == (2, 10)


@pytest.mark.parametrize("attention", ["sample", "batch", "elementwise"])
def test_the_reference_keeps_192778_parameters_with_every_attention_and_pooling(attention):
    for pooling in ("avg", "max"):
        assert trainable_count(build_model(attention=attention, pooling=pooling)) == 192_778


def test_max_pooling_takes_the_largest_activation_of_each_channel():
    model = build_model(conv_widths=(4,), num_blocks=1, pooling="max")
    features = keras.Model(model.inputs, model.get_layer("gmp").output)
    stem = keras.Model(model.inputs, model.get_layer("bn1").output)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(stem(images)).max(axis=(1, 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(features(images)), want, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stem="resnet", conv_widths=(8,) * 6), "at most 5 stages"),
        (dict(stem="resnet", conv_widths=(8, 8), downsample=("pool",)), "downsample"),
        (dict(stem="unet"), "stem"),
        (dict(pooling="sum"), "pooling"),
    ],
)
def test_bad_stem_and_pooling_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)
    with pytest.raises(ValueError, match=match):
        trainable_params(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(conv_widths=(32, 64, 64), stem="resnet", num_blocks=1, key_dim=16)]
)
def test_whitening_adds_a_frozen_2x2_conv_and_24_input_channels_to_conv1(kwargs):
    model = build_model(whiten=True, **kwargs)
    whiten = model.get_layer("whiten")
    assert not whiten.trainable and whiten.kernel.shape == (2, 2, 3, 24)
    assert model.get_layer("whiten_gelu").output.shape[1:] == (31, 31, 24)
    first = model.get_layer("conv1" if not kwargs else "stage1_conv")
    assert first.kernel.shape[2] == 24
    assert trainable_count(model) == trainable_params(whiten=True, **kwargs)
    assert (
        trainable_params(whiten=True, **kwargs) - trainable_params(**kwargs)
        == 9 * 21 * first.kernel.shape[3]
    )


def test_the_whitening_conv_makes_training_patches_uncorrelated_with_unit_variance(tmp_path):
    from keras_ultimus.models.ultimus import CIFAR10_MEAN, CIFAR10_STD
    from keras_ultimus.models.whitening import set_whitening

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (300, 32, 32, 3)).astype(np.float64)
    images = np.clip(0.5 * base + 0.5 * np.roll(base, 1, axis=2), 0, 255).astype(
        np.uint8
    )  # correlated neighbours
    model = build_model(whiten=True, conv_widths=(8,), num_blocks=1)
    set_whitening(model, images)
    # Independent NumPy: every 2x2 patch of the normalised images, in (row, col, channel) order, times the kernel.
    x = (images - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    patches = np.stack(
        [x[:, i : i + 31, j : j + 31, :] for i in range(2) for j in range(2)], axis=3
    ).reshape(-1, 12)
    kernel = keras.ops.convert_to_numpy(model.get_layer("whiten").kernel).reshape(12, 24)
    out = patches @ kernel
    raw = np.cov(patches, rowvar=False)
    assert (
        np.abs(raw - np.diag(np.diag(raw))).max() > 0.1
    )  # the patches are correlated to begin with
    np.testing.assert_allclose(np.cov(out[:, :12], rowvar=False), np.eye(12), atol=2e-2)
    np.testing.assert_array_equal(out[:, 12:], -out[:, :12])
    whitened = keras.Model(model.input, model.get_layer("whiten").output).predict(
        images[:4], verbose=0
    )
    np.testing.assert_allclose(
        whitened.reshape(-1, 24), (patches @ kernel)[: 4 * 31 * 31], rtol=1e-3, atol=1e-3
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.get_layer("whiten").kernel), kernel.reshape(2, 2, 3, 24)
    )

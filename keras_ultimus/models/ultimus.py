"""The Ultimus CIFAR-10 classifier: conv stem, attention blocks, logits."""

import functools
import inspect
import math
import random
import threading
from collections.abc import Sequence
from typing import Any

import keras

from keras_ultimus.constants import (  # noqa: F401  CLASS_NAMES: kept importable from here
    CIFAR10_MEAN,
    CIFAR10_STD,
    CLASS_NAMES,
    DOWNSAMPLE,
    IMAGE_SIZE,
    POOLING,
    STEMS,
)
from keras_ultimus.models.batch_normalization import BatchNormalization
from keras_ultimus.models.conv2d import Conv2D
from keras_ultimus.models.layers import ATTENTION, UltimusLayer
from keras_ultimus.models.whitening import WHITEN_PATCH, WHITEN_WIDTH


def parse_conv_widths(text: str) -> list[int]:
    """Parse comma-separated conv widths like `"32,256,48"`; ValueError names what is wrong."""
    try:
        widths = [int(w) for w in str(text).split(",")]
    except ValueError:
        raise ValueError(
            f"conv widths {text!r}: expected comma-separated integers like 32,256,48"
        ) from None
    if min(widths) < 1:
        raise ValueError(f"conv widths {text!r}: every width must be at least 1")
    return widths


def parse_downsample(text: str) -> list[str]:
    """Parse comma-separated downsampling steps like `"none,pool"`, one per gap between convs."""
    steps = [s.strip() for s in str(text).split(",")]
    bad = [s for s in steps if s not in DOWNSAMPLE]
    if bad:
        raise ValueError(f"downsample {text!r}: {bad[0]!r} is not one of {', '.join(DOWNSAMPLE)}")
    return steps


def stem_plan(
    conv_widths: Sequence[int], downsample: Sequence[str] | None = None, size: int = IMAGE_SIZE
) -> list[tuple[int, int, bool, int]]:
    """Check the stem arguments; return `(width, stride, pool_after, output_size)` per conv.

    Every conv is 3x3 with "valid" padding, so the feature map shrinks by 2
    per conv, and by half at each stride or pool; it must stay at least 1x1.
    """
    widths = list(conv_widths)
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(
            f"`conv_widths` must be one or more positive integers, got {conv_widths!r}."
        )
    steps = ["none"] * (len(widths) - 1) if downsample is None else list(downsample)
    if len(steps) != len(widths) - 1:
        raise ValueError(
            f"`downsample` needs one entry per gap between the {len(widths)} convs "
            f"({len(widths) - 1}), got {len(steps)}: {downsample!r}."
        )
    bad = [s for s in steps if s not in DOWNSAMPLE]
    if bad:
        raise ValueError(f"`downsample` entries must be one of {DOWNSAMPLE}, got {bad[0]!r}.")
    plan = []
    for i, width in enumerate(widths):
        stride = 2 if i > 0 and steps[i - 1] == "stride" else 1
        pool = i < len(steps) and steps[i] == "pool"
        if size < 3:
            raise ValueError(
                f"conv{i + 1} gets a {size}x{size} feature map, smaller than its 3x3 kernel: "
                "use fewer convs or less downsampling."
            )
        size = (size - 3) // stride + 1
        if pool:
            size //= 2
        plan.append((width, stride, pool, size))
    return plan


def resnet_plan(conv_widths: Sequence[int], downsample: Sequence[str] | None = None) -> list[int]:
    """Check the arguments of a residual stem; return its stage widths.

    Each stage halves the feature map with a 2x2 max-pool, so 32x32 allows at most 5 stages.
    """
    widths = list(conv_widths)
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(
            f"`conv_widths` must be one or more positive integers, got {conv_widths!r}."
        )
    if len(widths) > 5:
        raise ValueError(f"a resnet stem has at most 5 stages on 32x32 images, got {len(widths)}.")
    if downsample is not None and any(step != "none" for step in downsample):
        raise ValueError("a resnet stem pools in every stage; `downsample` must be unset.")
    return widths


def check_head(
    num_blocks: int,
    key_dim: int,
    scale: str,
    bn_momentum: float,
    num_classes: int,
    attention: str = "sample",
    pooling: str = "avg",
    stem: str = "plain",
) -> None:
    """Check the non-stem arguments of `build_model` with a clear ValueError."""
    for name, value, low in (
        ("num_blocks", num_blocks, 0),
        ("key_dim", key_dim, 1),
        ("num_classes", num_classes, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer of at least {low}, got {value!r}.")
    if scale not in ("pre", "post"):
        raise ValueError(f"`scale` must be 'pre' or 'post', got {scale!r}.")
    if (
        isinstance(bn_momentum, bool)
        or not isinstance(bn_momentum, (int, float))
        or not 0 <= bn_momentum < 1
    ):
        raise ValueError(f"`bn_momentum` must be a number in [0, 1), got {bn_momentum!r}.")
    for name, value, choices in (
        ("attention", attention, ATTENTION),
        ("pooling", pooling, POOLING),
        ("stem", stem, STEMS),
    ):
        if value not in choices:
            raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def build_model(
    num_blocks: int = 4,
    key_dim: int = 8,
    scale: str = "pre",
    residual: bool = False,
    conv_widths: Sequence[int] = (32, 256, 48),
    downsample: Sequence[str] | None = None,
    bn_momentum: float = 0.9,
    num_classes: int = 10,
    sync_bn: bool = False,
    attention: str = "sample",
    pooling: str = "avg",
    stem: str = "plain",
    whiten: bool = False,
) -> keras.Model:
    """Build the Ultimus model; it takes raw 0-255 float pixels, returns float32 logits.

    The defaults build the reference model (192,778 trainable parameters).
    Each conv of the stem is a 3x3 "valid" conv without bias, GELU and
    BatchNorm; `downsample` has one entry of `DOWNSAMPLE` per gap between two
    convs: `"pool"` adds a 2x2 max-pool before the next conv, `"stride"` gives
    the next conv a stride of 2 (default: `"none"` everywhere, the reference).

    `bn_momentum=0.9` matches PyTorch's BatchNorm default (momentum 0.1),
    which the reference used; Keras' own default of 0.99 lags badly over
    the ~100 steps of a CIFAR-10 epoch. `sync_bn=True` computes BatchNorm
    statistics over the global batch under a `tf.distribute` strategy.

    `stem="resnet"` replaces the plain stem by one residual stage per width
    of `conv_widths`, as in ResNet-9 and airbench: a 3x3 "same" conv, BN and
    GELU, a 2x2 max-pool, then `x + block(x)` where the block is two such
    convs. `pooling` is the global pooling between stem and blocks, `"avg"`
    (the reference) or `"max"`; `attention` is `UltimusLayer`'s. `num_blocks=0`
    feeds the pooled features straight to the logits: the ablation that shows
    what the Ultimus blocks add.

    `whiten=True` puts a frozen 2x2 conv and GELU before the stem, as in
    airbench: the kernel whitens the training set's 2x2 patches, each direction
    with both signs (`set_whitening` computes it from the training images;
    until then it is random).
    """
    check_head(num_blocks, key_dim, scale, bn_momentum, num_classes, attention, pooling, stem)
    plan = stem_layout(stem, conv_widths, downsample, whiten)
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.Normalization(
        mean=CIFAR10_MEAN,
        variance=[s**2 for s in CIFAR10_STD],
        name="normalize",
    )(inputs)
    if whiten:
        x = Conv2D(WHITEN_WIDTH, WHITEN_PATCH, use_bias=False, trainable=False, name="whiten")(x)
        x = keras.layers.Activation("gelu", name="whiten_gelu")(
            x
        )  # both signs of each direction, as in airbench
    if stem == "plain":
        for i, (width, stride, pool, _) in enumerate(plan, start=1):
            x = Conv2D(width, 3, strides=stride, padding="valid", use_bias=False, name=f"conv{i}")(
                x
            )
            x = keras.layers.Activation("gelu", name=f"gelu{i}")(x)
            x = BatchNormalization(momentum=bn_momentum, synchronized=sync_bn, name=f"bn{i}")(x)
            if pool:
                x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    else:
        for i, width in enumerate(plan, start=1):
            x = conv_bn_gelu(x, width, bn_momentum, sync_bn, f"stage{i}_conv")
            x = keras.layers.MaxPooling2D(2, name=f"stage{i}_pool")(x)
            y = conv_bn_gelu(x, width, bn_momentum, sync_bn, f"stage{i}_res1")
            y = conv_bn_gelu(y, width, bn_momentum, sync_bn, f"stage{i}_res2")
            x = keras.layers.Add(name=f"stage{i}_add")([x, y])
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    for i in range(1, num_blocks + 1):
        x = UltimusLayer(
            key_dim=key_dim, scale=scale, residual=residual, attention=attention, name=f"ultimus{i}"
        )(x)
    # float32 logits under any policy, so the loss's softmax runs in float32.
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="ultimus")


def conv_bn_gelu(x, width: int, bn_momentum: float, sync_bn: bool, name: str):
    """A 3x3 "same" conv without bias, BatchNorm and GELU: the unit of a residual stage."""
    x = Conv2D(width, 3, padding="same", use_bias=False, name=name)(x)
    x = BatchNormalization(momentum=bn_momentum, synchronized=sync_bn, name=f"{name}_bn")(x)
    return keras.layers.Activation("gelu", name=f"{name}_gelu")(x)


def stem_layout(
    stem: str, conv_widths: Sequence[int], downsample: Sequence[str] | None, whiten: bool
) -> list:
    """Check the stem arguments; return the plain stem's `stem_plan` or the residual stem's stage widths."""
    if stem == "plain":
        return stem_plan(
            conv_widths, downsample, IMAGE_SIZE - WHITEN_PATCH + 1 if whiten else IMAGE_SIZE
        )
    return resnet_plan(conv_widths, downsample)


def check_model_args(**model_args: Any) -> dict:
    """`build_model`'s arguments, its defaults filled in, checked as it checks them; nothing is built.

    An argument it does not take raises TypeError; a bad value, the ValueError `build_model` would raise.
    """
    try:
        bound = inspect.signature(build_model).bind(**model_args)
    except TypeError as e:
        raise TypeError(f"build_model: {e}") from None
    bound.apply_defaults()
    args = bound.arguments
    head = ("num_blocks", "key_dim", "scale", "bn_momentum", "num_classes", "attention", "pooling")
    check_head(*(args[name] for name in head), args["stem"])
    stem_layout(args["stem"], args["conv_widths"], args["downsample"], args["whiten"])
    return dict(args)


def trainable_params(**model_args: Any) -> int:
    """Trainable parameters of `build_model(**model_args)`, counted on the model itself.

    Bad arguments raise before anything is built (`check_model_args`). The model is built without
    initializing a weight, once per configuration (`count_trainable`): about 0.01 to 0.1 s for a new
    configuration on a CPU with any backend, cheap enough for the tuner's check of every draw.
    """
    args = check_model_args(**model_args)
    args.pop("sync_bn")  # the same weights, synchronized or not (and only TensorFlow synchronizes)
    return count_trainable(
        tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items())
    )


@functools.lru_cache(maxsize=1024)
def count_trainable(arguments: tuple) -> int:
    """Build the model of `(name, value)` pairs without initializing its weights, and count the trainable ones.

    Inside `keras.StatelessScope(initialize_variables=False)` Keras leaves new weights uninitialized and
    lists them in its global state, which is per thread: the model is built in a thread of its own, so
    the list goes with it. Python's random state, from which each layer's default initializer draws its
    seed, is restored, so a count between seeding and a build leaves the build's weights as they were.
    """
    counted = {}

    def build_and_count() -> None:
        try:
            with keras.StatelessScope(initialize_variables=False):
                model = build_model(**dict(arguments))
            counted["params"] = sum(math.prod(w.shape) for w in model.trainable_weights)
        except BaseException as e:  # raised in the caller's thread below
            counted["error"] = e

    state = random.getstate()
    try:
        thread = threading.Thread(target=build_and_count, name="count_trainable")
        thread.start()
        thread.join()
    finally:
        random.setstate(state)
    if "error" in counted:
        raise counted["error"]
    return counted["params"]

"""The Ultimus CIFAR-10 classifier: conv stem, attention blocks, logits."""

from collections.abc import Sequence

import keras

from keras_ultimus.layers import UltimusLayer

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# Per-channel statistics of the CIFAR-10 training set, on the 0-255 scale.
CIFAR10_MEAN = (125.307, 122.950, 113.865)
CIFAR10_STD = (62.993, 62.089, 66.705)


def build_model(
    num_blocks: int = 4,
    key_dim: int = 8,
    scale: str = "pre",
    residual: bool = False,
    conv_widths: Sequence[int] = (32, 256, 48),
    bn_momentum: float = 0.9,
    num_classes: int = 10,
) -> keras.Model:
    """Build the Ultimus model; it takes raw 0-255 float pixels, returns logits.

    `bn_momentum=0.9` matches PyTorch's BatchNorm default (momentum 0.1),
    which the reference used; Keras' own default of 0.99 lags badly over
    the ~100 steps of a CIFAR-10 epoch.
    """
    inputs = keras.Input(shape=(32, 32, 3), name="images")
    x = keras.layers.Normalization(
        mean=CIFAR10_MEAN,
        variance=[s**2 for s in CIFAR10_STD],
        name="normalize",
    )(inputs)
    for i, width in enumerate(conv_widths, start=1):
        x = keras.layers.Conv2D(
            width, 3, padding="valid", use_bias=False, name=f"conv{i}"
        )(x)
        x = keras.layers.Activation("gelu", name=f"gelu{i}")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    for i in range(1, num_blocks + 1):
        x = UltimusLayer(
            key_dim=key_dim, scale=scale, residual=residual, name=f"ultimus{i}"
        )(x)
    # float32 logits under any policy, so the loss's softmax runs in float32.
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="ultimus")

"""Constants both the Keras side and the Keras-free side use: the dataset's, and every setting's choices.

Defined once here; `models`, `datasets`, `training`, `serving`, `report` and the
tuner import them from this module, which imports nothing.
"""

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# Per-channel statistics of the CIFAR-10 training set, on the 0-255 scale.
CIFAR10_MEAN = (125.307, 122.950, 113.865)
CIFAR10_STD = (62.993, 62.089, 66.705)
IMAGE_SIZE = 32

# The model's choices (`build_model` arguments).
ATTENTION = ("sample", "batch", "elementwise")
SCALES = ("pre", "post")
# What happens between two convs of the stem: nothing (the reference), a 2x2
# max-pool, or a stride of 2 on the next conv.
DOWNSAMPLE = ("none", "pool", "stride")
# "plain": 3x3 valid convs with optional downsampling (the reference); "resnet": one residual stage per width.
STEMS = ("plain", "resnet")
POOLING = ("avg", "max")

# How a run executes.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_MODES = ("auto", "on", "off")
PIPELINES = ("auto", "tfdata", "numpy", "device")
DISTRIBUTE_MODES = ("none", "mirrored", "data-parallel", "multi-worker")

# The recipe's options.
OPTIMIZERS = ("adam", "sgd")
TTA = ("none", "flip", "multicrop")

# The tuner's search spaces.
SPACES = ("reference", "wide")

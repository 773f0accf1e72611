"""Every setting of a training run, defined once: its type, default, allowed values or range, and help.

Three frozen dataclasses describe a run: `ModelConfig` (the `build_model`
arguments), `RecipeOptions` (optimizer, regularisation, weight averaging, TTA)
and `RunConfig` (data, schedule and how the run executes). Their fields are the
keys of a run config: the commands' flags are generated from them
(`add_flags`), and `--config` files, `run.json`'s "config", the tuner's
`best.json` and trial configs, and `keras_ultimus.fit(**settings)` are checked
against them (`check_settings`, `check_config`). Imports no Keras.
"""

import dataclasses
from dataclasses import dataclass

from keras_ultimus.constants import (
    ATTENTION,
    DISTRIBUTE_MODES,
    JIT_MODES,
    OPTIMIZERS,
    PIPELINES,
    POOLING,
    PRECISIONS,
    SCALES,
    STEMS,
    TTA,
)
from keras_ultimus.errors import UserError
from keras_ultimus.fields import check_range, check_value, setting


@dataclass(frozen=True)
class ModelConfig:
    """The `build_model` arguments of a run (`sync_bn`, also one, is in `RunConfig`: it concerns replicas)."""

    num_blocks: int = setting(
        4,
        "number of Ultimus blocks (0: the pooled features go straight to the logits, an ablation)",
        "int",
        flag="--blocks",
    )
    key_dim: int = setting(8, "size of the q, k and v projections", "int")
    scale: str = setting("pre", "scale before or after softmax", "str", choices=SCALES)
    residual: bool = setting(False, "x + block(x) (a variant, not the reference)", "bool")
    conv_widths: list = setting(
        [32, 256, 48], "comma-separated conv widths, one per conv (default: 32,256,48)", "widths"
    )
    downsample: list | None = setting(
        None,
        "comma-separated none|pool|stride, one per gap between convs "
        "(default: none everywhere, the reference)",
        "steps",
    )
    bn_momentum: float = setting(0.9, "BatchNorm momentum (0.9: PyTorch's default)", "float")
    stem: str = setting(
        "plain",
        "plain: 3x3 valid convs (the reference); resnet: one residual stage per "
        "--conv-widths entry",
        "str",
        choices=STEMS,
    )
    pooling: str = setting("avg", "global pooling between stem and blocks", "str", choices=POOLING)
    whiten: bool = setting(
        False,
        "a frozen 2x2 conv and GELU before the stem; the conv whitens the training "
        "set's patches (airbench)",
        "bool",
    )
    attention: str = setting(
        "sample",
        "sample: per-sample 8x8 map (the reference); batch or elementwise: the "
        "original code's two readings",
        "str",
        choices=ATTENTION,
    )


@dataclass(frozen=True)
class RecipeOptions:
    """Optimizer, regularisation, weight averaging and test-time augmentation of one run.

    The defaults are the reference recipe, so a run without these settings
    computes exactly what it did before they existed.
    """

    optimizer: str = setting(
        "adam",
        "adam (AdamW when --weight-decay is set) or sgd (Nesterov momentum)",
        "str",
        choices=OPTIMIZERS,
    )
    momentum: float = setting(
        0.9, "SGD's Nesterov momentum (sgd only)", "float", minimum=0, below=1
    )
    weight_decay: float = setting(
        0.0,
        "decoupled weight decay on conv and dense kernels (AdamW / SGD); 0: off",
        "float",
        minimum=0,
    )
    label_smoothing: float = setting(
        0.0, "label smoothing of the cross-entropy; 0: off", "float", minimum=0, below=1
    )
    ema: float = setting(
        0.0,
        "momentum of an EMA of the weights that validation and the saved model use "
        "(e.g. 0.99); 0: off",
        "float",
        minimum=0,
        below=1,
    )
    tta: str = setting(
        "none",
        "also score the final model with test-time augmentation, each figure reported apart: flip (the "
        "image and its mirror); multicrop (flip, and also 6 views: those two, and each moved one pixel either way)",
        "str",
        choices=TTA,
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_range(f, check_value(f, getattr(self, f.name), "RecipeOptions"))

    @classmethod
    def from_config(cls, config: dict) -> "RecipeOptions":
        """The options of a run config; keys it lacks (runs older than these options) take the defaults."""
        return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config})


@dataclass(frozen=True)
class RunConfig:
    """The data, the schedule and how a run executes."""

    data: str | None = setting(
        None,
        "local CIFAR-10 copy: cifar-10-binary.tar.gz or cifar-10-batches-bin/ "
        "(default: $CIFAR10_PATH, else TFDS)",
        "str",
    )
    epochs: int = setting(24, "passes over the training set", "int", minimum=1)
    batch_size: int = setting(512, "images per optimizer step", "int", minimum=1)
    max_lr: float | str = setting(
        0.003,
        "one-cycle peak LR for Adam, or 'auto': run the LR range test first and use its suggestion",
        "max_lr",
        above=0,
    )
    pct_start: float = setting(
        0.25, "fraction of steps spent warming up", "float", minimum=0, below=1
    )
    seed: int = setting(0, "seeds weights, shuffling and augmentation", "int")
    val_split: float | None = setting(
        None,
        "hold out this fraction of the training images (a seeded split) and "
        "keep best.keras by its accuracy; without it no best.keras is written "
        "(the per-epoch val_* figures are the test set's)",
        "float",
        above=0,
        below=1,
    )
    augment: bool = setting(True, "no crop/flip augmentation", "bool", flag="--no-augment")
    limit_train: int | None = setting(
        None, "use only the first N training images (default: all 50,000)", "int", minimum=1
    )
    limit_test: int | None = setting(
        None, "use only the first N test images (default: all 10,000)", "int", minimum=1
    )
    deterministic: bool = setting(
        False,
        "reruns with the same seed give identical logs and weights (TF op determinism)",
        "bool",
    )
    precision: str = setting(
        "float32",
        "Keras dtype policy; mixed_float16 adds dynamic loss scaling",
        "str",
        choices=PRECISIONS,
    )
    jit: str = setting(
        "auto",
        "compilation of the train step (auto: Keras' default for the backend; torch.compile for torch runs of "
        "500 steps or more)",
        "str",
        choices=JIT_MODES,
    )
    pipeline: str = setting(
        "auto",
        "input pipeline (auto: tf.data where TensorFlow imports, else NumPy; "
        "device: the images stay on the accelerator, and each batch is cropped and flipped "
        "there)",
        "str",
        choices=PIPELINES,
    )
    distribute: str = setting(
        "none",
        "mirrored: TF MirroredStrategy; data-parallel: JAX "
        "keras.distribution.DataParallel (several processes via KERAS_DISTRIBUTION_* env "
        "vars); multi-worker: refused (keras#20585)",
        "str",
        choices=DISTRIBUTE_MODES,
    )
    devices: int | None = setting(
        None,
        "make N logical CPU devices (CPU-only machines, to try data parallelism)",
        "int",
        minimum=1,
    )
    sync_bn: bool = setting(
        False, "TF: BatchNormalization(synchronized=True) across replicas", "bool"
    )


SECTIONS = (RunConfig, ModelConfig, RecipeOptions)
FIELDS: dict[str, dataclasses.Field] = {
    f.name: f for cls in SECTIONS for f in dataclasses.fields(cls)
}
# The `build_model` arguments among them.
MODEL_ARGS = (*(f.name for f in dataclasses.fields(ModelConfig)), "sync_bn")


def default_config() -> dict:
    """The run config of `python -m keras_ultimus.train` with no flags: the reference model and recipe."""
    return {
        name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for name, f in FIELDS.items()
    }


def check_settings(settings: dict, source: str = "setting", key_source: str = "--config") -> dict:
    """Check run-config keys and value types; return them, each of its setting's type."""
    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:
        raise UserError(
            f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(FIELDS))}"
        )
    return {key: check_value(FIELDS[key], value, key_source) for key, value in settings.items()}


def check_config(config: dict) -> None:
    """Check a whole run config's ranges and the settings that go together (raises UserError, one line)."""
    for name, f in FIELDS.items():
        if name in config:
            check_range(f, config[name])
    RecipeOptions.from_config(config)
    if config.get("sync_bn") and config.get("distribute") != "mirrored":
        raise UserError("sync_bn=True needs distribute='mirrored' (TensorFlow)")


def model_kwargs(config: dict) -> dict:
    """The `build_model` arguments of a run config (keys a run predates take `build_model`'s defaults)."""
    return {k: config[k] for k in MODEL_ARGS if k in config}


# The best family model's settings (reports/whiten-bs256-avgpool-cpu, the ultimus_whiten_resnet_cifar10 preset), but
# its batch size: `--quick` and the GPU driver's ablation start from these.
BEST_FAMILY = {
    "stem": "resnet",
    "conv_widths": [32, 64, 64],
    "num_blocks": 1,
    "key_dim": 16,
    "pooling": "avg",
    "whiten": True,
    "label_smoothing": 0.1,
    "tta": "multicrop",
    "max_lr": 0.004,
}
# What `--quick` sets, defined once: the best family model on a subset, so a first run shows learning in minutes
# on a laptop CPU (README). Explicit flags and --config values override these.
QUICK = check_settings(
    {
        **BEST_FAMILY,
        "batch_size": 128,
        "epochs": 2,
        "limit_train": 25000,
        "limit_test": 2000,
    },
    "QUICK",
)
check_config(QUICK)

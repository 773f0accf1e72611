"""The training recipe's options beyond the one-cycle Adam reference, defined once; imports no Keras.

Each field is a `train` flag (`--label-smoothing`, ...), a `--config`/`run.json`
key of the same name, and an axis of the tuner's wide search space. The
defaults are the reference recipe, so a run without these flags computes
exactly what it did before they existed.
"""

import argparse
import dataclasses
import math
from dataclasses import dataclass, field

OPTIMIZERS = ("adam", "sgd")
TTA = ("none", "flip")


@dataclass(frozen=True)
class RecipeOptions:
    """Optimizer, regularisation, weight averaging and test-time augmentation of one run."""

    optimizer: str = field(default="adam", metadata={
        "choices": OPTIMIZERS, "help": "adam (AdamW when --weight-decay is set) or sgd (Nesterov momentum)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD's Nesterov momentum (sgd only)"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "decoupled weight decay on conv and dense kernels (AdamW / SGD); 0: off"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of the cross-entropy; 0: off"})
    ema: float = field(default=0.0, metadata={
        "help": "momentum of an EMA of the weights that validation and the saved model use (e.g. 0.99); 0: off"})
    tta: str = field(default="none", metadata={
        "choices": TTA, "help": "flip: also score the final model with flip test-time augmentation (reported apart)"})

    def __post_init__(self):
        for name in ("momentum", "weight_decay", "label_smoothing", "ema"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.tta not in TTA:
            raise ValueError(f"tta must be one of {', '.join(TTA)}, got {self.tta!r}")
        if not 0 <= self.momentum < 1 or not 0 <= self.ema < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("momentum, ema and label_smoothing must be in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be at least 0, got {self.weight_decay}")

    @classmethod
    def from_config(cls, config: dict) -> "RecipeOptions":
        """The options of a run config; keys it lacks (runs older than these options) take the defaults."""
        return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config})


def add_recipe_flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Add one flag per `RecipeOptions` field, as a "recipe" group; return their actions."""
    group = parser.add_argument_group("recipe (defaults: the reference recipe)")
    return [group.add_argument(f"--{f.name.replace('_', '-')}", type=f.type, default=f.default,
                               choices=f.metadata.get("choices"), help=f.metadata["help"])
            for f in dataclasses.fields(RecipeOptions)]

"""Every setting of a training run, defined once as a flag of `python -m keras_ultimus.train`; imports no Keras.

The flags' dests are the keys of a run config: `--config` JSON files, `run.json`'s
"config", the tuner's `best.json` and the keyword arguments of
`keras_ultimus.fit` all use them, and all are checked here, one line per error.
"""

import argparse
import json
import math
from pathlib import Path

from keras_ultimus.errors import ArgumentParser, UserError, prog
from keras_ultimus.training.flags import add_model_flags
from keras_ultimus.training.recipe_options import RecipeOptions, add_recipe_flags

# The choices of the flags that say how a run executes, defined once; the tuner and the bench take these flags
# from `add_run_flags`. PIPELINES and DISTRIBUTE_MODES equal `pipelines.KINDS` and `distribute.MODES` (tested).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_MODES = ("auto", "on", "off")
PIPELINES = ("auto", "tfdata", "numpy", "device")
DISTRIBUTE_MODES = ("none", "mirrored", "data-parallel", "multi-worker")
# Flags that --resume accepts: they don't change what the run computes.
RESUME_FLAGS = {"resume", "data", "verbose"}
# Not part of a run's config.
NOT_CONFIG = {"config", "quick", "resume", "out", "verbose"}
# What `--quick` sets, defined once: the best family model (reports/whiten-bs256-cpu) on a subset, so a first run
# shows learning in minutes on a laptop CPU (README). Explicit flags and --config values override these.
QUICK = {
    "stem": "resnet", "conv_widths": "32,64,64", "num_blocks": 1, "key_dim": 16, "pooling": "max", "whiten": True,
    "label_smoothing": 0.1, "tta": "flip", "batch_size": 128, "max_lr": 0.004,
    "epochs": 2, "limit_train": 25000, "limit_test": 2000,
}


def max_lr(text: str) -> float | str:
    """A --max-lr value: a number, or "auto"."""
    return text if text == "auto" else float(text)


# The flags of `train` that aren't model or recipe flags, in --help order: names and `add_argument` keywords.
# Defined here once; `add_run_flags` gives any of them to another command.
RUN_FLAGS: dict[str, tuple[tuple[str, ...], dict]] = {
    "config": (("--config",), dict(help="JSON file of flag values to use as defaults (e.g. a tuner's best.json)")),
    "quick": (("--quick",), dict(action="store_true", help="a first run that visibly learns in minutes on a CPU: "
                                 "the best family model on a subset (" + ", ".join(
                                     f"{k}={v}" for k, v in QUICK.items()) + "); other flags override these")),
    "data": (("--data",), dict(help="local CIFAR-10 copy: cifar-10-binary.tar.gz or cifar-10-batches-bin/ "
                                    "(default: $CIFAR10_PATH, else TFDS)")),
    "out": (("--out",), dict(help="new run folder (default: runs/ultimus-<time>)")),
    "resume": (("--resume",), dict(metavar="RUN", help="continue an interrupted run folder from its last epoch")),
    "epochs": (("--epochs",), dict(type=int, default=24, help="passes over the training set")),
    "batch_size": (("--batch-size",), dict(type=int, default=512, help="images per optimizer step")),
    "max_lr": (("--max-lr",), dict(type=max_lr, default=0.003, help="one-cycle peak LR for Adam, or 'auto': run "
                                   "the LR range test first and use its suggestion")),
    "pct_start": (("--pct-start",), dict(type=float, default=0.25, help="fraction of steps spent warming up")),
    "seed": (("--seed",), dict(type=int, default=0, help="seeds weights, shuffling and augmentation")),
    "augment": (("--no-augment",), dict(dest="augment", action="store_false", help="no crop/flip augmentation")),
    "limit_train": (("--limit-train",), dict(type=int, help="use only the first N training images "
                                               "(default: all 50,000)")),
    "limit_test": (("--limit-test",), dict(type=int, help="use only the first N test images (default: all 10,000)")),
    "deterministic": (("--deterministic",), dict(action="store_true", help="reruns with the same seed give "
                                                 "identical logs and weights (TF op determinism)")),
    "precision": (("--precision",), dict(choices=PRECISIONS, default="float32",
                                         help="Keras dtype policy; mixed_float16 adds dynamic loss scaling")),
    "jit": (("--jit",), dict(choices=JIT_MODES, default="auto",
                             help="XLA compilation of the train step (auto: Keras' default for the backend)")),
    "pipeline": (("--pipeline",), dict(choices=PIPELINES, default="auto", help="input pipeline (auto: tf.data "
                                       "where TensorFlow imports, else NumPy; device: the images stay on the "
                                       "accelerator, and each batch is cropped and flipped there)")),
    "distribute": (("--distribute",), dict(choices=DISTRIBUTE_MODES, default="none", help="mirrored: TF "
                                           "MirroredStrategy; data-parallel: JAX keras.distribution.DataParallel "
                                           "(several processes via KERAS_DISTRIBUTION_* env vars); multi-worker: "
                                           "refused (keras#20585)")),
    "devices": (("--devices",), dict(type=int, help="make N logical CPU devices (CPU-only machines, to try data "
                                     "parallelism)")),
    "sync_bn": (("--sync-bn",), dict(action="store_true",
                                     help="TF: BatchNormalization(synchronized=True) across replicas")),
    "verbose": (("-v", "--verbose"), dict(action="store_true", help="keep TensorFlow's C++ log lines")),
}


def parser_and_actions() -> tuple[argparse.ArgumentParser, list[argparse.Action]]:
    """`train`'s parser, and the actions of its flags in --help order."""
    p = ArgumentParser(prog=prog("keras_ultimus.train", "ultimus-train"),
                       description="Train the Ultimus model on CIFAR-10 into a resumable run folder.")
    return p, [*add_run_flags(p, *RUN_FLAGS), *add_model_flags(p), *add_recipe_flags(p)]


def build_parser() -> argparse.ArgumentParser:
    """Flags map one-to-one onto `build_model` and `fit` arguments."""
    return parser_and_actions()[0]


def add_run_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *dests: str) -> list[argparse.Action]:
    """Give another command `train`'s own flags for `dests`: the same names, types, choices, defaults and help."""
    return [parser.add_argument(*RUN_FLAGS[dest][0], **RUN_FLAGS[dest][1]) for dest in dests]


def config_value(action: argparse.Action, value: object, source: str = "--config") -> object:
    """Check one --config value against its flag's type; return it, or raise UserError naming the key."""
    key = action.dest
    if action.nargs == 0:  # store_true / store_false
        ok = isinstance(value, bool)
    elif value is None:
        ok = action.default is None
    elif action.choices:
        ok = value in action.choices
    elif action.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif action.type in (float, max_lr):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
        if action.type is max_lr and value == "auto":
            ok = True
    elif key in ("conv_widths", "downsample"):
        ok = isinstance(value, (str, list))
    else:
        ok = isinstance(value, str)
    if not ok:
        expected = (f"one of {list(action.choices)}" if action.choices else "true or false" if action.nargs == 0
                    else "a number or 'auto'" if action.type is max_lr else getattr(action.type, "__name__", "str"))
        raise UserError(f"{source} key {key!r}: expected {expected}, got {value!r}")
    return value


def read_config(path: str) -> dict:
    """Read a --config JSON file of flag dests; every key must be a flag and every value of its type."""
    file = Path(path)
    if file.is_dir():
        raise UserError(f"--config {path}: is a folder, not a JSON file")
    try:
        values = json.loads(file.read_text())
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: cannot read ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise UserError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise UserError(f"--config {path}: expected a JSON object of flag values")
    return check_settings(values, f"--config {path}")


def check(args: argparse.Namespace) -> None:
    """Check flag values (raises UserError, one line)."""
    for flag in ("epochs", "batch_size", "limit_train", "limit_test", "devices"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.max_lr != "auto" and not (math.isfinite(args.max_lr) and args.max_lr > 0):
        raise UserError(f"--max-lr must be a positive number or 'auto', got {args.max_lr}")
    if not 0 <= args.pct_start < 1:
        raise UserError(f"--pct-start must be in [0, 1), got {args.pct_start}")
    try:
        RecipeOptions.from_config(vars(args))
    except ValueError as e:
        raise UserError(f"recipe flags: {e}") from None
    if args.sync_bn and args.distribute != "mirrored":
        raise UserError("--sync-bn needs --distribute mirrored (TensorFlow)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; --config values become defaults that flags override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick or args.config:  # --config values over --quick's, and flags over both
        parser.set_defaults(**{**(QUICK if args.quick else {}), **(read_config(args.config) if args.config else {})})
        args = parser.parse_args(argv)
    check(args)
    return args


def default_config() -> dict:
    """The run config of `python -m keras_ultimus.train` with no flags: the reference model and recipe."""
    return {k: v for k, v in vars(build_parser().parse_args([])).items() if k not in NOT_CONFIG}


def check_settings(settings: dict, source: str = "setting", key_source: str = "--config") -> dict:
    """Check run-config keys and values as `--config` checks them; return them, each of its flag's type."""
    actions = {a.dest: a for a in parser_and_actions()[1] if a.dest not in NOT_CONFIG}
    unknown = sorted(set(settings) - set(actions))
    if unknown:
        raise UserError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(actions))}")
    return {key: config_value(actions[key], value, key_source) for key, value in settings.items()}

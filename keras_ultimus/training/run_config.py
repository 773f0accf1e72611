"""`train`'s flags, generated from the run's typed config (`keras_ultimus.config`), and its `--config` files.

Imports no Keras. The flags' dests are the keys of a run config; `--config`
JSON files are checked as `keras_ultimus.fit`'s keywords and `run.json` are.
"""

import argparse
import json
from pathlib import Path

from keras_ultimus.config import (
    FIELDS,
    QUICK,
    ModelConfig,
    RecipeOptions,
    RunConfig,
    check_config,
    check_settings,
    default_config,
)
from keras_ultimus.errors import ArgumentParser, MissingFileError, UserError, prog
from keras_ultimus.flags import add_flags

__all__ = ["build_parser", "check_settings", "default_config", "parse_args", "read_config"]
# Flags that --resume accepts: they don't change what the run computes.
RESUME_FLAGS = {"resume", "data", "verbose"}
# Not part of a run's config.
NOT_CONFIG = {"config", "quick", "resume", "out", "verbose"}


def names(cls: type) -> list[str]:
    """The setting names of one section of the run config, in --help order."""
    return [f.name for f in FIELDS.values() if f.name in cls.__dataclass_fields__]


def quick_text(value: object) -> str:
    """A --quick setting as its flag would take it (widths comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def build_parser() -> argparse.ArgumentParser:
    """Flags map one-to-one onto the run config: `build_model`, the recipe and the run's own settings."""
    p = ArgumentParser(
        prog=prog("keras_ultimus.train", "ultimus-train"),
        description="Train the Ultimus model on CIFAR-10 into a resumable run folder.",
    )
    p.add_argument(
        "--config", help="JSON file of flag values to use as defaults (e.g. a tuner's best.json)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a first run that visibly learns in minutes on a CPU: the "
        "best family model on a subset ("
        + ", ".join(f"{k}={quick_text(v)}" for k, v in QUICK.items())
        + "); other flags and --config values override these",
    )
    add_flags(p, ["data"])
    p.add_argument("--out", help="new run folder (default: runs/ultimus-<time>)")
    p.add_argument(
        "--resume", metavar="RUN", help="continue an interrupted run folder from its last epoch"
    )
    add_flags(p, [n for n in names(RunConfig) if n != "data"])
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    add_flags(p.add_argument_group("model"), names(ModelConfig))
    add_flags(p.add_argument_group("recipe (defaults: the reference recipe)"), names(RecipeOptions))
    return p


def read_config(path: str) -> dict:
    """Read a --config JSON file of run-config keys; every key must be a setting and every value of its type."""
    file = Path(path)
    if file.is_dir():
        raise UserError(f"config={path}: is a folder, not a JSON file")
    try:
        values = json.loads(file.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"config={path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config={path}: cannot read ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise UserError(f"config={path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise UserError(f"config={path}: expected a JSON object of flag values")
    return check_settings(values, f"config={path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; --config values become defaults that flags override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick or args.config:  # --config values over --quick's, and flags over both
        parser.set_defaults(
            **{**(QUICK if args.quick else {}), **(read_config(args.config) if args.config else {})}
        )
        args = parser.parse_args(argv)
    check_config(vars(args))
    return args

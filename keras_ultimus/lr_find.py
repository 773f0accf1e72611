"""LR range test for the Ultimus recipe: `python -m keras_ultimus.lr_find --help`.

Sweeps the learning rate exponentially over about one epoch and writes
sweep.csv, lr_find.png and lr_find.json (with the suggested peak LR) into --out.
"""

import argparse
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

from keras_ultimus.backend import prepare
from keras_ultimus.config import ModelConfig, RecipeOptions, check_config
from keras_ultimus.errors import ArgumentParser, UserError, cli, prog
from keras_ultimus.flags import add_flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags for the sweep, the data and the model; every value is checked before anything runs."""
    p = ArgumentParser(
        prog=prog("keras_ultimus.lr_find", "ultimus-lr-find"),
        description="LR range test for the Ultimus recipe.",
    )
    add_flags(p, ["data"])
    p.add_argument(
        "--out",
        help="new folder for sweep.csv, lr_find.png, lr_find.json (default: runs/lr_find-<time>)",
    )
    p.add_argument("--min-lr", type=float, default=1e-5, help="first LR of the sweep")
    p.add_argument(
        "--max-lr",
        type=float,
        default=1.0,
        help="last LR of the sweep (it stops early on divergence)",
    )
    p.add_argument("--steps", type=int, help="optimizer steps in the sweep (default: one epoch)")
    add_flags(p, ["batch_size", "seed"])
    p.add_argument(
        "--smoothing", type=float, default=0.9, help="EMA factor beta for the smoothed loss"
    )
    add_flags(p, ["augment", "limit_train"])
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    add_flags(p.add_argument_group("model"), list(ModelConfig.__dataclass_fields__))
    add_flags(
        p.add_argument_group("recipe (defaults: the reference recipe)"),
        list(RecipeOptions.__dataclass_fields__),
    )
    args = p.parse_args(argv)
    if not (args.min_lr > 0 and args.max_lr > 0):
        p.error(f"--min-lr and --max-lr must be positive, got {args.min_lr:g} and {args.max_lr:g}")
    if args.min_lr >= args.max_lr:
        p.error(f"--min-lr must be below --max-lr, got {args.min_lr:g} >= {args.max_lr:g}")
    if args.steps is not None and args.steps < 2:
        p.error(f"--steps must be at least 2, got {args.steps}")
    if not 0 < args.smoothing < 1:
        p.error(f"--smoothing must be between 0 and 1, got {args.smoothing:g}")
    return args


@cli
def main(argv: list[str] | None = None) -> int:
    """Parse flags, load the data, run the sweep and print the suggested peak LR."""
    args = parse_args(argv)
    sweep_flags = ("out", "verbose", "min_lr", "max_lr", "steps", "smoothing")
    config = {k: v for k, v in vars(args).items() if k not in sweep_flags}
    check_config(config)
    prepare(verbose=args.verbose)
    from keras_ultimus.training.recipe import check_model

    config = check_model(config)
    out = Path(args.out or f"runs/lr_find-{datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists; pick a new --out")

    from keras_ultimus.datasets.cifar10 import load_cifar10
    from keras_ultimus.training.lr_range import find_lr

    config["data"] = args.data or os.environ.get("CIFAR10_PATH")
    data = load_cifar10(config["data"])
    command = shlex.join(
        ["python", "-m", "keras_ultimus.lr_find", *(sys.argv[1:] if argv is None else argv)]
    )
    result = find_lr(
        config, data, out, args.min_lr, args.max_lr, args.steps, args.smoothing, command
    )
    print(
        f"suggested peak LR: {result['suggested']:.3g} (steepest descent of the smoothed loss, "
        f"{result['steps_run']} steps{'; stopped: ' + result['stopped_early'] if result['stopped_early'] else ''})"
    )
    print(f"wrote {result['sweep_csv']}, {result['chart']} and {out / 'lr_find.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train the Ultimus model on CIFAR-10: `python -m keras_ultimus.train --help`."""

import argparse
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

from keras_ultimus.data import DataError, load_cifar10
from keras_ultimus.recipe import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags map one-to-one onto `build_model` and `fit` arguments."""
    p = argparse.ArgumentParser(prog="python -m keras_ultimus.train", description=__doc__.split(":")[0] + ".")
    p.add_argument("--config", help="JSON file of flag values to use as defaults (e.g. a tuner's best.json)")
    p.add_argument("--data", help="local CIFAR-10 copy: cifar-10-binary.tar.gz or cifar-10-batches-bin/ "
                   "(default: $CIFAR10_PATH, else TFDS)")
    p.add_argument("--out", help="new run folder (default: runs/ultimus-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run folder from its last epoch")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-lr", type=float, default=0.003, help="one-cycle peak LR for Adam")
    p.add_argument("--pct-start", type=float, default=0.25, help="fraction of steps spent warming up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no crop/flip augmentation")
    p.add_argument("--limit-train", type=int, help="use only the first N training images")
    p.add_argument("--limit-test", type=int, help="use only the first N test images")
    g = p.add_argument_group("model")
    g.add_argument("--blocks", dest="num_blocks", type=int, default=4, help="number of Ultimus blocks")
    g.add_argument("--key-dim", type=int, default=8)
    g.add_argument("--scale", choices=("pre", "post"), default="pre", help="scale before or after softmax")
    g.add_argument("--residual", action="store_true", help="x + block(x) (a variant, not the reference)")
    g.add_argument("--conv-widths", type=lambda s: [int(w) for w in s.split(",")], default=[32, 256, 48],
                   help="comma-separated conv widths (default: 32,256,48)")
    g.add_argument("--bn-momentum", type=float, default=0.9)
    args = p.parse_args(argv)
    if args.config:
        try:
            p.set_defaults(**json.loads(Path(args.config).read_text()))
        except (OSError, ValueError, TypeError) as e:
            p.error(f"--config {args.config}: {e}")
        args = p.parse_args(argv)
    for flag in ("epochs", "batch_size", "num_blocks", "key_dim", "limit_train", "limit_test"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if not args.max_lr > 0 or not 0 < args.pct_start < 1:
        p.error("--max-lr must be positive and --pct-start between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Parse flags, make or reopen the run folder, and train."""
    args = parse_args(argv)
    if args.resume:
        out = Path(args.resume)
        if not (out / "run.json").is_file():
            print(f"error: {out}: not a run folder (no run.json)", file=sys.stderr)
            return 2
        info = json.loads((out / "run.json").read_text())
        if "finished" in info:
            print(f"error: {out}: run already finished at {info['finished']}", file=sys.stderr)
            return 2
        config = info["config"]
    else:
        out = Path(args.out or f"runs/ultimus-{datetime.now():%Y%m%d-%H%M%S}")
        if out.exists() and any(out.iterdir()):
            print(f"error: {out}: run folder exists; pick a new --out or --resume it", file=sys.stderr)
            return 2
        config = {k: v for k, v in vars(args).items() if k not in ("resume", "out", "config")}
        config["data"] = args.data or os.environ.get("CIFAR10_PATH")
    try:
        data = load_cifar10(config["data"])  # before the run folder exists
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "keras_ultimus.train", *(sys.argv[1:] if argv is None else argv)])
    try:
        info = train(config, out, data, resume=bool(args.resume), command=command)
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with python -m keras_ultimus.train --resume {out}", file=sys.stderr)
        return 130
    print(f"Run folder: {out}  final: {info['final']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

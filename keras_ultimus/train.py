"""Train the Ultimus model on CIFAR-10 into a resumable run folder: `python -m keras_ultimus.train --help`."""

import argparse
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

from keras_ultimus.backend import prepare
from keras_ultimus.config import FIELDS, check_settings, default_config
from keras_ultimus.datasets.cifar10 import check_local_path
from keras_ultimus.errors import EXIT_NO_SPACE, NO_SPACE, UserError, cli
from keras_ultimus.flags import flag_of
from keras_ultimus.runs.folder import (
    CSV_NAME,
    INFO_NAME,
    LOCK_NAME,
    FolderLock,
    check_folder_path,
    check_log,
    check_new_folder,
    drop_partial_last_line,
)
from keras_ultimus.training.evaluation import tta_words
from keras_ultimus.training.recipe import check_model
from keras_ultimus.training.run_config import NOT_CONFIG, RESUME_FLAGS, build_parser, parse_args


def given_flags(argv: list[str] | None) -> set[str]:
    """The dests of the flags named on the command line (not defaults)."""
    parser, unset = build_parser(), object()
    # argparse fills in a default only where the namespace has no value yet.
    given = parser.parse_args(
        argv, argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), unset))
    )
    return {dest for dest, value in vars(given).items() if value is not unset}


def read_run(folder: str, epochs: int | None = None) -> dict:
    """The run.json of an unfinished run folder, for --resume; its config checked as a --config file is.

    A finished run is refused with the command that trains a new run `epochs` long (N if not given).
    """
    out = Path(folder)
    path = out / INFO_NAME
    if not out.exists():
        raise UserError(f"--resume {out}: no such folder")
    if not path.is_file():
        raise UserError(f"{out}: not a run folder (no run.json)")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable run record ({type(e).__name__}: {e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise UserError(f'{path}: not a run record (no "config" object)')
    if "finished" in info:
        raise UserError(
            f"{out}: run already finished at {info['finished']}; its LR schedule ended with its last "
            f"epoch, so train longer in a new run: {longer_run(info.get('command'), out, epochs)}"
        )
    # Keys a run predates take their defaults, which are what it ran with.
    info["config"] = {**default_config(), **check_settings(info["config"], str(path), str(path))}
    return info


def longer_run(command: str | None, out: Path, epochs: int | None) -> str:
    """A finished run's command with `--epochs epochs` (N if None) and a new --out."""
    words, kept = iter(shlex.split(command or "python -m keras_ultimus.train")), []
    for word in words:
        if word in ("--epochs", "--out"):
            next(words, None)
        elif not word.startswith(("--epochs=", "--out=")):
            kept.append(word)
    return shlex.join([*kept, "--epochs", str(epochs or "N"), "--out", f"{out}-{epochs or 'N'}ep"])


def resume_config(
    args: argparse.Namespace, argv: list[str] | None, info: dict
) -> tuple[Path, dict]:
    """The run folder and config to continue; refuses flags that would change the run."""
    out, config = Path(args.resume), info["config"]
    changed = sorted(
        dest
        for dest in given_flags(argv) - RESUME_FLAGS
        if dest in NOT_CONFIG or config.get(dest) != getattr(args, dest)
    )
    if changed:
        names = ", ".join(flag_of(FIELDS[d]) if d in FIELDS else "--" + d for d in changed)
        raise UserError(
            f"--resume continues {out} as it was started; it takes only --data and -v, not {names}"
        )
    if args.data:
        config = {**config, "data": args.data}
    return out, config


def new_run(args: argparse.Namespace) -> tuple[Path, dict]:
    """The new run folder (not created yet) and its config."""
    out = Path(args.out or f"runs/ultimus-{datetime.now():%Y%m%d-%H%M%S}")
    config = {k: v for k, v in vars(args).items() if k not in NOT_CONFIG}
    config["data"] = args.data or os.environ.get("CIFAR10_PATH")
    return out, config


@cli
def main(argv: list[str] | None = None) -> int:
    """Parse flags, check every input, then make or reopen the run folder and train."""
    args = parse_args(argv)
    previous = (
        read_run(args.resume, args.epochs if "epochs" in given_flags(argv) else None)
        if args.resume
        else None
    )
    data = args.data or (
        previous["config"].get("data") if previous else os.environ.get("CIFAR10_PATH")
    )
    if data:
        check_local_path(data)  # path errors come first: before any setup, data read or model built
    if (
        args.out and not previous and not (Path(args.out) / LOCK_NAME).exists()
    ):  # a held lock is named below
        check_new_folder(Path(args.out))
    devices = previous["config"].get("devices") if previous else args.devices
    backend = prepare(verbose=args.verbose, devices=devices)
    vars(args).update(check_model(vars(args)))
    out, config = resume_config(args, argv, previous) if previous else new_run(args)
    if (
        config.get("deterministic") and backend == "jax"
    ):  # read when JAX starts its backends, not at import
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} --xla_gpu_deterministic_ops=true".strip()
        )

    from keras_ultimus.training import distribute

    plan = distribute.setup(
        config.get("distribute", "none"), config.get("devices"), config["batch_size"]
    )
    if not plan.is_chief:
        return run(config, out, previous, plan, argv)
    check_folder_path(out)
    with FolderLock(out):  # a second command on this folder is refused, naming this process
        if previous:
            drop_partial_last_line(out / CSV_NAME)
            check_log(out / CSV_NAME)
        else:
            check_new_folder(out)
        return run(config, out, previous, plan, argv)


def run(config: dict, out: Path, previous: dict | None, plan, argv: list[str] | None) -> int:
    """Load the data, run the LR range test if asked, and train into `out`; return the exit code."""
    from keras_ultimus.datasets.cifar10 import load_cifar10
    from keras_ultimus.training.recipe import train

    data = load_cifar10(config["data"])  # before anything but the lock is written
    command = shlex.join(
        ["python", "-m", "keras_ultimus.train", *(sys.argv[1:] if argv is None else argv)]
    )
    extra = {}
    if config["max_lr"] == "auto":
        from keras_ultimus.training.lr_range import find_lr

        found = find_lr(config, data, out / "lr_find", command=command)
        config["max_lr"] = found["suggested"]
        extra["lr_find"] = {
            k: found[k]
            for k in (
                "suggested",
                "sweep_csv",
                "chart",
                "min_lr",
                "max_lr",
                "steps_run",
                "stopped_early",
            )
        }
        print(f"LR range test: max_lr {config['max_lr']:.3g} (sweep in {out / 'lr_find'})")
    try:
        info = train(
            config, out, data, resume=bool(previous), command=command, plan=plan, extra=extra
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: continue with python -m keras_ultimus.train --resume {out}",
            file=sys.stderr,
        )
        return 130
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        print(
            f"\nerror: {e.filename or out}: write failed ({e.strerror}); {out} keeps its last whole epoch: "
            f"free space, then python -m keras_ultimus.train --resume {out}",
            file=sys.stderr,
        )
        return EXIT_NO_SPACE
    if plan.is_chief:
        print(final_summary(out, info))
    return 0


def final_summary(out: Path, info: dict) -> str:
    """A finished run's closing lines: its folder, and the last epoch's figures in words."""
    final, config = info["final"], info["config"]
    words = tta_words(final)
    tta = f" ({words})" if words else ""
    limit = config.get("limit_test")
    shown = min(limit, info.get("test_images", limit)) if limit else None  # the data may hold fewer
    images = f" on the first {shown:,} test images" if shown else ""
    return (
        f"Run folder: {out}\n"
        f"After {int(final['epoch']) + 1} of {config['epochs']} epochs in {info.get('wall_seconds', 0):.0f} s: "
        f"test accuracy {final['val_accuracy']:.2%}{tta}{images}; "
        f"training accuracy {final['accuracy']:.2%}, loss {final['loss']:.4f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())

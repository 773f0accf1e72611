"""Search the Ultimus model's hyperparameters with KerasTuner: `python tuner/tune.py --help`.

The objective is `val_accuracy` on a seeded split held out from the training
set; the official test set is used once, at the end, for the best trial's
model. Re-running the same command resumes the search. With
KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set it runs
as KerasTuner's chief (tuner id containing "chief") or as a worker.
"""

import argparse
import json
import os
import shlex
import sys
import time
from importlib.util import find_spec
from pathlib import Path

if __package__ in (None, ""):  # run as `python tuner/tune.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import keras_ultimus  # noqa: F401, I001  first: checks the Keras backend before keras_tuner imports Keras
import keras_tuner as kt
import numpy as np
import pandas as pd

from keras_ultimus import train
from keras_ultimus.recipe import write_atomic
from keras_ultimus.data import Arrays, DataError, load_cifar10, make_dataset, split_validation
from tuner.hypermodel import FIT_NAME, SPACE, UltimusHyperModel, str_to_widths, widths_to_str

OBJECTIVE = "val_accuracy"
ALGORITHMS = ("hyperband", "bayesian", "random")
# Flags that define a search; resuming with other values would mix two searches.
# (--max-trials may change: a search can be resumed with a larger budget.)
SETTINGS = ("algorithm", "epochs", "limit_train", "val_fraction", "seed", "batch_size", "conv_widths")


def widths_flag(text: str) -> str:
    """Parse one `--conv-widths` value like `32,256,48`."""
    try:
        widths = str_to_widths(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: widths must be positive")
    return widths_to_str(widths)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the search flags; bad values exit with code 2."""
    defaults = train.parse_args([])  # the training defaults the search builds on
    p = argparse.ArgumentParser(prog="python tuner/tune.py", description=__doc__.split(":")[0] + ".")
    p.add_argument("--data", help="local CIFAR-10 copy: cifar-10-binary.tar.gz or cifar-10-batches-bin/ "
                   "(default: $CIFAR10_PATH, else TFDS)")
    p.add_argument("--out", default="runs/search", help="search folder; re-run to resume (default: runs/search)")
    p.add_argument("--fresh", action="store_true", help="delete the search folder's trials and start over")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="hyperband")
    p.add_argument("--max-trials", type=int, help="stop after this many trials (default: 10 for "
                   "bayesian/random; for hyperband, its own schedule)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial (hyperband: the most for one model)")
    p.add_argument("--limit-train", type=int, help="use only the first N training images (before the split)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the training images held out "
                   "for the objective (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the oracle and the training")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--conv-widths", type=widths_flag, nargs="+",
                   default=[widths_to_str(defaults.conv_widths)],
                   help="one value fixes the conv widths, several are searched (default: 32,256,48)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.max_trials is not None and args.max_trials < 1:
        p.error("--max-trials must be at least 1")
    if args.limit_train is not None and args.limit_train < 2:
        p.error("--limit-train must be at least 2")
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be between 0 and 1")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.algorithm == "bayesian" and find_spec("sklearn") is None:
        p.error("--algorithm bayesian needs scikit-learn: pip install scikit-learn")
    return args


def role() -> str:
    """'single', 'chief' or 'worker', from KerasTuner's distribution variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if v not in os.environ]
    if missing:
        raise ValueError(f"KERASTUNER_ORACLE_IP is set but {missing[0]} is not")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


class Hyperband(kt.Hyperband):
    """KerasTuner's Hyperband, with workers pausing between trial requests."""

    def pre_create_trial(self):
        """Pause a worker: while a round finishes the oracle answers IDLE, and KerasTuner asks again at once."""
        if role() == "worker":
            time.sleep(1)


def make_tuner(args: argparse.Namespace, hypermodel: kt.HyperModel, overwrite: bool) -> kt.Tuner:
    """The KerasTuner tuner for `--algorithm`, keeping its state in `--out`."""
    out = Path(args.out)
    common = dict(hypermodel=hypermodel, objective=OBJECTIVE, seed=args.seed, overwrite=overwrite,
                  directory=str(out.parent), project_name=out.name)
    if args.algorithm == "hyperband":
        tuner = Hyperband(max_epochs=args.epochs, **common)
        tuner.oracle.max_trials = args.max_trials  # an optional cap on Hyperband's own schedule
        return tuner
    max_trials = args.max_trials or 10
    if args.algorithm == "random":
        return kt.RandomSearch(max_trials=max_trials, **common)
    # KerasTuner's default of 3 random points per hyperparameter would leave
    # nothing for the Gaussian process in a small budget.
    return kt.BayesianOptimization(max_trials=max_trials, num_initial_points=max(2, max_trials // 3), **common)


def leaderboard(tuner: kt.Tuner) -> pd.DataFrame:
    """One row per trial the oracle recorded, best `val_accuracy` first."""
    rows = []
    for trial in tuner.oracle.trials.values():
        fit_file = Path(tuner.get_trial_dir(trial.trial_id)) / FIT_NAME
        fit = json.loads(fit_file.read_text()) if fit_file.exists() else {}
        rows.append({
            "trial_id": trial.trial_id,
            "status": trial.status,
            **trial.hyperparameters.values,
            "trainable_params": fit.get("trainable_params"),
            "best_val_accuracy": trial.score,
            "epochs_run": fit.get("epochs_run"),
            "seconds": fit.get("seconds"),
            "tuner_id": fit.get("tuner_id"),
        })
    table = pd.DataFrame(rows)
    stats = ["trainable_params", "best_val_accuracy", "epochs_run", "seconds", "tuner_id"]
    extra = sorted(c for c in table.columns if c.startswith("tuner/"))  # Hyperband's bookkeeping
    table = table[["trial_id", "status", *SPACE, *extra, *stats]]
    return table.sort_values(["best_val_accuracy", "trial_id"], ascending=[False, True], na_position="last")


def best_config(values: dict, batch_size: int) -> dict:
    """The best trial's values as `keras_ultimus.train` flag dests, for `--config`."""
    config = {name: values[name] for name in SPACE}
    config["conv_widths"] = str_to_widths(config["conv_widths"])
    config["batch_size"] = batch_size
    return config


def finish(tuner: kt.Tuner, args: argparse.Namespace, test: tuple[np.ndarray, np.ndarray]) -> dict:
    """Write leaderboard.csv, best.json and result.json (with the best model's test accuracy)."""
    out = Path(args.out)
    tuner.save()  # a chief's oracle saves before it drops the last ended trial from its ongoing ones
    table = leaderboard(tuner)
    write_atomic(out / "leaderboard.csv", table.to_csv(index=False))
    completed = table[table["status"] == "COMPLETED"]
    if completed.empty:
        raise RuntimeError(f"no trial completed; see the trial folders in {out}")
    best = tuner.oracle.get_best_trials(1)[0]
    write_atomic(out / "best.json", json.dumps(best_config(best.hyperparameters.values, args.batch_size), indent=2))
    model = tuner.load_model(best)  # weights of its best epoch
    logits = model.predict(make_dataset(*test, args.batch_size), verbose=0)
    result = {
        "best_trial": best.trial_id,
        "val_accuracy": best.score,
        "test_accuracy": float(np.mean(np.argmax(logits, axis=-1) == test[1])),
        "test_images": len(test[1]),
        "trials_completed": len(completed),
        "settings": {k: getattr(args, k) for k in ("max_trials", *SETTINGS)},
    }
    write_atomic(out / "result.json", json.dumps(result, indent=2))
    return result


def check_settings(args: argparse.Namespace) -> None:
    """Refuse to resume a search folder with different search flags."""
    path = Path(args.out) / "search.json"
    if args.fresh or not path.exists():
        return
    old = json.loads(path.read_text())
    for k in SETTINGS:
        if old.get(k) != getattr(args, k):
            raise ValueError(f"{args.out} was searched with --{k.replace('_', '-')} {old.get(k)}, not "
                             f"{getattr(args, k)}: repeat its flags to resume, or add --fresh to start over")


def search_data(args: argparse.Namespace) -> tuple[Arrays, Arrays, Arrays]:
    """(fit, validation, test) arrays; validation is a seeded split of the training set only."""
    (x_train, y_train), test = load_cifar10(args.data)
    x_train, y_train = x_train[: args.limit_train], y_train[: args.limit_train]
    fit, val = split_validation(x_train, y_train, args.val_fraction, args.seed)
    if len(val[0]) < 1 or len(fit[0]) < 2 * args.batch_size:
        raise DataError(f"{len(fit[0])} training / {len(val[0])} validation images: need a validation image "
                        "and at least 2 batches per epoch (lower --batch-size or --val-fraction, or raise "
                        "--limit-train)")
    return fit, val, test


def main(argv: list[str] | None = None) -> int:
    """Run or resume the search, then write its leaderboard and best config."""
    args = parse_args(argv)
    try:
        mode = role()
        if mode != "worker":  # workers take their trials from the chief
            check_settings(args)
        (x_fit, y_fit), val, test = search_data(args)
    except (ValueError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{mode}: {len(x_fit)} training, {len(val[0])} validation images; search folder {args.out}")
    hypermodel = UltimusHyperModel(args.conv_widths, args.batch_size, seed=args.seed)
    # A worker never wipes the shared folder: the chief (or launcher) does that.
    tuner = make_tuner(args, hypermodel, overwrite=args.fresh and mode != "worker")
    if mode != "worker":
        command = shlex.join(["python", "tuner/tune.py", *(sys.argv[1:] if argv is None else argv)])
        settings = {k: getattr(args, k) for k in SETTINGS}
        write_atomic(Path(args.out) / "search.json", json.dumps({**settings, "command": command}))
    try:
        tuner.search(x_fit, y_fit, validation_data=val, epochs=args.epochs)
        if mode == "worker":
            print(f"{os.environ['KERASTUNER_TUNER_ID']}: no trials left, exiting")
            return 0
        result = finish(tuner, args, test)
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume {args.out}", file=sys.stderr)
        return 130
    except RuntimeError as e:  # KerasTuner gives up after repeated failed trials
        print(f"error: {str(e).splitlines()[0]} (the trials' messages are in {args.out}/trial_*/trial.json)",
              file=sys.stderr)
        return 1
    print(f"best trial {result['best_trial']}: val_accuracy {result['val_accuracy']:.4f}, "
          f"test_accuracy {result['test_accuracy']:.4f} on {result['test_images']} test images")
    print(f"wrote {Path(args.out) / 'leaderboard.csv'}; train it in full with:\n"
          f"  python -m keras_ultimus.train --config {Path(args.out) / 'best.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

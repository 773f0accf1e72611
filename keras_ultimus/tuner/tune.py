"""Search the Ultimus model's hyperparameters with KerasTuner: `python -m keras_ultimus.tuner.tune --help`.

The objective is `val_accuracy` on a seeded split held out from the training
set (45,000 / 5,000 images with the defaults); the official test set is used
once, at the end, for the best trial's model. Re-running the same command
resumes the search. With KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT set it runs as KerasTuner's chief (a tuner id
containing "chief") or as a worker; `keras_ultimus.tuner.launch` sets them.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

from keras_ultimus.backend import prepare
from keras_ultimus.errors import UserError, cli

PROG = "python -m keras_ultimus.tuner.tune"
ALGORITHMS = ("hyperband", "bayesian", "random")
# The same choices as `keras_ultimus.train`; each trial compiles and fits with them as train does.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT = ("auto", "on", "off")
PIPELINES = ("auto", "tfdata", "numpy")
DISTRIBUTE = ("none", "mirrored", "data-parallel", "multi-worker")


def parser() -> argparse.ArgumentParser:
    """The search flags; they import no Keras."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":")[0] + ".", allow_abbrev=False)
    p.add_argument("--data", help="local CIFAR-10 copy: cifar-10-binary.tar.gz or cifar-10-batches-bin/ "
                   "(default: $CIFAR10_PATH, else TFDS)")
    p.add_argument("--out", default="runs/search", help="search folder; re-run to resume (default: runs/search)")
    p.add_argument("--fresh", action="store_true", help="delete the search folder's trials and start over")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="hyperband")
    p.add_argument("--max-trials", type=int, help="stop after this many trials (default: 10 for "
                   "bayesian/random; for hyperband, its own schedule)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial (hyperband: the most for one model)")
    p.add_argument("--max-params", type=int, default=250_000,
                   help="trainable-parameter budget; larger configurations are listed, not trained (default: 250000)")
    p.add_argument("--limit-train", type=int, help="use only the first N training images (before the split)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the training images held out "
                   "for the objective (default: 0.1, i.e. 45,000 / 5,000)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the oracle and the training")
    p.add_argument("--batch-size", type=int, default=512)
    g = p.add_argument_group("how each trial trains (as keras_ultimus.train)")
    g.add_argument("--precision", choices=PRECISIONS, default="float32", help="Keras dtype policy")
    g.add_argument("--jit", choices=JIT, default="auto", help="XLA compilation (auto: Keras' default)")
    g.add_argument("--pipeline", choices=PIPELINES, default="auto",
                   help="input pipeline (auto: tf.data where TensorFlow imports, else NumPy)")
    g.add_argument("--distribute", choices=DISTRIBUTE, default="none",
                   help="spread each trial over this process's devices")
    g.add_argument("--devices", type=int, help="make N logical CPU devices (for --distribute on a CPU)")
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the search flags; bad values exit with code 2 and one line."""
    p = parser()
    args = p.parse_args(argv)
    for flag in ("epochs", "max_trials", "batch_size", "max_params", "devices"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.limit_train is not None and args.limit_train < 2:
        p.error(f"--limit-train must be at least 2, got {args.limit_train}")
    if not 0 < args.val_fraction < 1:
        p.error(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.algorithm == "bayesian" and find_spec("sklearn") is None:
        p.error("--algorithm bayesian needs scikit-learn: pip install scikit-learn")
    return args


def settings(args: argparse.Namespace) -> dict:
    """The flags that define the search, recorded in search.json and result.json."""
    from keras_ultimus.tuner.search import SETTINGS

    return {k: getattr(args, k) for k in ("max_trials", *SETTINGS)}


def check_out(out: Path) -> None:
    """--out must be a search folder (one the tuner or the launcher made), or not exist yet."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a search folder")
    markers = ("oracle.json", "search.json", "logs")  # logs/: the launcher made it for its children
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in markers):
        raise UserError(f"--out {out}: a folder that is not a search folder; pick a new --out")


@cli
def main(argv: list[str] | None = None) -> int:
    """Run or resume the search, then write its leaderboard, best config and test accuracy."""
    args = parse_args(argv)
    prepare(verbose=args.verbose, devices=args.devices)
    out = Path(args.out)
    check_out(out)
    from keras_ultimus import distribute
    from keras_ultimus.pipelines import resolve
    from keras_ultimus.recipe import write_atomic
    from keras_ultimus.tuner import search
    from keras_ultimus.tuner.hypermodel import UltimusHyperModel

    mode = search.role()
    chosen = settings(args)
    if mode != "worker" and not args.fresh:  # workers take their trials from the chief
        search.check_settings(out, chosen)
    pipeline = resolve(args.pipeline)
    plan = distribute.setup(args.distribute, args.devices, args.batch_size)
    if plan.processes > 1:
        raise UserError("the tuner trains each trial in one process; spread trials over processes with "
                        "python -m keras_ultimus.tuner.launch --workers N")
    (x_fit, y_fit), val, test = search.search_data(args.data, args.limit_train, args.val_fraction, args.seed,
                                                   args.batch_size)
    print(f"{mode}: {len(x_fit)} training, {len(val[0])} validation images; search folder {out}")
    if args.fresh and mode != "worker":  # a worker never wipes the shared folder: the chief (or launcher) does
        shutil.rmtree(out, ignore_errors=True)
    hypermodel = UltimusHyperModel(args.batch_size, seed=args.seed, precision=args.precision, jit=args.jit,
                                   pipeline=pipeline, plan=plan)
    tuner = search.make_tuner(args.algorithm, out, hypermodel, args.epochs, args.max_trials, args.seed,
                              args.max_params, overwrite=False, strategy=plan.strategy)
    if mode != "worker":
        command = shlex.join(["python", "-m", "keras_ultimus.tuner.tune", *(sys.argv[1:] if argv is None else argv)])
        write_atomic(out / search.SEARCH_NAME, json.dumps({**chosen, "command": command}))
    try:
        tuner.search(x_fit, y_fit, validation_data=val, epochs=args.epochs)
        if mode == "worker":
            print(f"{os.environ['KERASTUNER_TUNER_ID']}: no trials left, exiting")
            return 0
        result = search.finish(tuner, out, chosen, test, pipeline)
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume {out}", file=sys.stderr)
        return 130
    except RuntimeError as e:  # KerasTuner gives up after repeated failed trials
        print(f"error: {str(e).splitlines()[0]} (the trials' messages are in {out}/trial_*/trial.json)",
              file=sys.stderr)
        return 1
    print(f"best trial {result['best_trial']}: val_accuracy {result['val_accuracy']:.4f}, "
          f"test_accuracy {result['test_accuracy']:.4f} on {result['test_images']} test images")
    print(f"wrote {out / search.LEADERBOARD_NAME}; train it in full with:\n"
          f"  python -m keras_ultimus.train --config {out / search.BEST_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

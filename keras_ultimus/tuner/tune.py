"""Search the Ultimus model's hyperparameters with KerasTuner: `python -m keras_ultimus.tuner.tune --help`.

The objective is `val_accuracy` on a seeded split held out from the training
set (45,000 / 5,000 images with the defaults); the official test set is used
once, at the end, for the best trial's model. Re-running the same command
resumes the search. With KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT set it runs as KerasTuner's chief (a tuner id
containing "chief") or as a worker; `keras_ultimus.tuner.launch` sets them.
"""

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

from keras_ultimus.backend import prepare
from keras_ultimus.errors import UserError, cli
from keras_ultimus.runs.folder import FolderLock, clear_folder, write_atomic
from keras_ultimus.tuner.options import check_out, parse_args, settings


@cli
def main(argv: list[str] | None = None) -> int:
    """Run or resume the search, then write its leaderboard, best config and test accuracy."""
    args = parse_args(argv)
    backend = prepare(verbose=args.verbose, devices=args.devices)
    out = Path(args.out)
    check_out(out)
    from keras_ultimus.datasets.pipelines import resolve
    from keras_ultimus.training import distribute
    from keras_ultimus.tuner import search
    from keras_ultimus.tuner.hypermodel import UltimusHyperModel

    mode = search.role()
    chosen = settings(args)
    if mode != "worker" and not args.fresh:  # workers take their trials from the chief
        search.check_settings(out, chosen)
    pipeline = resolve(args.pipeline)
    plan = distribute.setup(args.distribute, args.devices, args.batch_size)
    if plan.processes > 1:
        raise UserError(
            "the tuner trains each trial in one process; spread trials over processes with "
            "python -m keras_ultimus.tuner.launch --workers N"
        )
    (x_fit, y_fit), val, test = search.search_data(
        args.data, args.limit_train, args.val_fraction, args.seed, args.batch_size
    )
    test = (
        test[0][: args.limit_test],
        test[1][: args.limit_test],
    )  # scores the best trial's model at the end
    print(f"{mode}: {len(x_fit)} training, {len(val[0])} validation images; search folder {out}")
    # Workers share the chief's folder: the chief (or a single search) holds its lock, and only it wipes it.
    with contextlib.nullcontext() if mode == "worker" else FolderLock(out):
        if args.fresh and mode != "worker":
            clear_folder(out)
        hypermodel = UltimusHyperModel(
            plan,
            args.space,
            batch_size=args.batch_size,
            seed=args.seed,
            precision=args.precision,
            jit=args.jit,
            pipeline=pipeline,
        )
        tuner = search.make_tuner(
            args.algorithm,
            out,
            hypermodel,
            args.epochs,
            args.max_trials,
            args.seed,
            args.max_params,
            overwrite=False,
            strategy=plan.strategy,
        )
        if mode != "worker":
            argv = sys.argv[1:] if argv is None else argv
            command = shlex.join(["python", "-m", "keras_ultimus.tuner.tune", *argv])
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
            print(
                f"error: {str(e).splitlines()[0]} (the trials' messages are in {out}/trial_*/trial.json)",
                file=sys.stderr,
            )
            return 1
    print(
        f"best trial {result['best_trial']}: val_accuracy {result['val_accuracy']:.4f}, "
        f"test_accuracy {result['test_accuracy']:.4f} on {result['test_images']} test images"
    )
    env = (
        f"KERAS_BACKEND={backend} " if os.environ.get("KERAS_BACKEND") else ""
    )  # the backend this search ran on
    print(
        f"wrote {out / search.LEADERBOARD_NAME}; train it in full with:\n"
        f"  {env}python -m keras_ultimus.train --config {out / search.BEST_NAME}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

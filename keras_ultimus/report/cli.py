"""The report command line: `python -m keras_ultimus.report --help` (console script `ultimus-report`)."""

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from keras_ultimus.backend import prepare
from keras_ultimus.errors import NO_SPACE, ArgumentParser, UserError, cli, prog

DESCRIPTION = (
    "Report on training runs or a KerasTuner search: Markdown with PNG charts, from each run's log.csv, "
    "run.json and saved model.keras (evaluated on the CIFAR-10 test split). With --evaluate, re-evaluate "
    "one saved model and print its test accuracy beside the one its run logged."
)


def build_parser() -> argparse.ArgumentParser:
    """The report's flags."""
    p = ArgumentParser(prog=prog("keras_ultimus.report", "ultimus-report"), description=DESCRIPTION)
    p.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="run folder(s) holding log.csv and run.json, "
        "or one search folder of the tuner (holding leaderboard.csv)",
    )
    p.add_argument(
        "--out", help="report folder to write (e.g. reports/NAME); required unless --evaluate"
    )
    p.add_argument(
        "--evaluate",
        metavar="RUN_OR_MODEL",
        help="re-evaluate a run folder's model.keras (or a "
        ".keras file beside its log.csv and run.json) on the test images its run validated on",
    )
    p.add_argument(
        "--tolerance",
        type=int,
        default=0,
        metavar="IMAGES",
        help="with --evaluate: exit 1 if the accuracies differ by more than this many test images "
        "(default 0: the same backend recomputes the same predictions)",
    )
    p.add_argument(
        "--data", help="local CIFAR-10 copy for the test split (default: $CIFAR10_PATH, else TFDS)"
    )
    p.add_argument(
        "--no-model",
        action="store_true",
        help="don't load model.keras: skip the test-split figures (no data needed)",
    )
    p.add_argument(
        "--slim",
        action="store_true",
        help="leave out the learning-rate chart and each run's confusion "
        "matrix and misclassified gallery (the heaviest charts; redrawn without --slim), for reports kept "
        "in git",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    return p


def check_out(out: Path) -> None:
    """Refuse an --out that is a file, or a folder holding something other than a report."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected a report folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.md").is_file():
        raise UserError(f"--out {out}: exists and is not a report folder; pick another --out")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"--out {out}: {out.parent} is a file, expected a folder")


def write_folder(out: Path, write: Callable[[Path], None]) -> None:
    """Run `write(folder)` on a scratch folder beside `out`, then move its files in: no half-written report."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    except OSError as e:
        raise UserError(f"--out {out}: can't write there ({e.strerror})") from None
    try:
        write(scratch)
        out.mkdir(exist_ok=True)
        for f in scratch.iterdir():
            os.replace(f, out / f.name)
    except OSError as e:
        if e.errno in NO_SPACE:  # the report, not its scratch file, is what the user asked for
            raise OSError(e.errno, e.strerror, str(out)) from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def evaluate_main(target: Path, data: str | None, tolerance: int) -> int:
    """Print a saved model's re-evaluated test accuracy beside its run's logged one; 1 if they disagree."""
    from keras_ultimus.report.evaluate import check_saved_model
    from keras_ultimus.report.markdown import shown_path
    from keras_ultimus.report.tables import pct

    check = check_saved_model(target, data)
    diff = check.correct - check.logged_correct
    verdict = "agree" if diff == 0 else f"differ by {diff:+d} image{'s' * (abs(diff) != 1)}"
    print(
        f"{shown_path(check.model_path)}: test accuracy {pct(check.accuracy)} "
        f"({check.correct:,} of {check.images:,} test images); {check.log_name}'s final val_accuracy "
        f"{pct(check.logged)} (epoch {check.epoch}): {verdict}"
    )
    print(
        f"{shown_path(check.model_path)}: with flip TTA {pct(check.tta_accuracy)} "
        f"({check.tta_correct:,} of {check.images:,}), with multi-crop TTA {pct(check.multicrop_accuracy)} "
        f"({check.multicrop_correct:,}); separate figures, not the one the log holds"
    )
    return 0 if abs(diff) <= tolerance else 1


@cli
def main(argv: list[str] | None = None) -> int:
    """Parse flags, read the runs or the search, evaluate the models and write the report folder."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.evaluate is not None:
        if args.runs or args.out or args.no_model or args.slim:
            parser.error("--evaluate takes no RUN, --out, --no-model or --slim")
    elif not args.runs or args.out is None:
        parser.error("give RUN folder(s) and --out, or --evaluate RUN_OR_MODEL")
    if args.tolerance < 0:
        parser.error(f"--tolerance {args.tolerance}: must be 0 or more")
    from keras_ultimus.report.runs import require_folder

    if args.evaluate is None:  # path errors before the backend is set up or any run is read
        out = Path(args.out)
        check_out(out)
        folders = [require_folder(Path(r)) for r in args.runs]
    prepare(args.verbose)
    # Evaluating several models retraces predict once per model, as it must: TF's warning about it is noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    from keras_ultimus.report.evaluate import attach_models
    from keras_ultimus.report.markdown import write_report
    from keras_ultimus.report.runs import read_run, run_names
    from keras_ultimus.report.search import is_search, read_search, write_search_report

    if args.evaluate is not None:
        return evaluate_main(Path(args.evaluate), args.data, args.tolerance)
    command = shlex.join(
        ["python", "-m", "keras_ultimus.report", *(sys.argv[1:] if argv is None else argv)]
    )
    if any(is_search(f) for f in folders):
        if len(folders) > 1:
            raise UserError("a search folder (with leaderboard.csv) is reported on its own")
        search = read_search(folders[0])
        write_folder(
            out, lambda folder: write_search_report(search, folder, command, published=out)
        )
    else:
        runs = [read_run(f, n) for f, n in zip(folders, run_names(folders))]
        attach_models(runs, args.data, args.no_model)
        write_folder(out, lambda folder: write_report(runs, folder, command, args.slim))
    print(f"Report: {out / 'report.md'}")
    return 0

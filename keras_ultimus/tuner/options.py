"""The search's command-line options, shared by `tune` and `launch`; they import no Keras."""

from argparse import Namespace
from importlib.util import find_spec
from pathlib import Path

from keras_ultimus.config import check_config
from keras_ultimus.constants import SPACES
from keras_ultimus.errors import ArgumentParser, UserError, in_flag_terms, prog
from keras_ultimus.flags import add_flags
from keras_ultimus.runs.folder import LOCK_NAME

PROG = "python -m keras_ultimus.tuner.tune"
ALGORITHMS = ("hyperband", "bayesian", "random")
MAX_PARAMS = 250_000  # the trainable-parameter budget of a searched model
# Flags that define a search; resuming with other values would mix two searches.
# (--max-trials may change: a search can be resumed with a larger budget.)
# The run settings a search takes from the run config (`keras_ultimus.config`): flags, types and ranges.
RUN_SETTINGS = ("limit_test", "batch_size", "precision", "jit", "pipeline", "distribute", "devices")
SETTINGS = (
    "algorithm",
    "epochs",
    "limit_train",
    "val_fraction",
    "seed",
    "batch_size",
    "max_params",
    "precision",
    "space",
)


def parser() -> ArgumentParser:
    """The search flags; they import no Keras."""
    p = ArgumentParser(
        prog=prog("keras_ultimus.tuner.tune", "ultimus-tune"),
        description="Search the Ultimus model's hyperparameters with KerasTuner.",
        allow_abbrev=False,
    )
    add_flags(p, ["data"])
    p.add_argument(
        "--out",
        default="runs/search",
        help="search folder; re-run to resume (default: runs/search)",
    )
    p.add_argument(
        "--fresh", action="store_true", help="delete the search folder's trials and start over"
    )
    p.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="hyperband",
        help="KerasTuner's search algorithm (bayesian needs scikit-learn)",
    )
    p.add_argument(
        "--max-trials",
        type=int,
        help="stop after this many trials (default: 10 for "
        "bayesian/random; for hyperband, its own schedule)",
    )
    p.add_argument(
        "--epochs", type=int, default=4, help="epochs per trial (hyperband: the most for one model)"
    )
    p.add_argument(
        "--max-params",
        type=int,
        default=MAX_PARAMS,
        help="trainable-parameter budget; larger configurations are listed, not trained (default: 250000)",
    )
    p.add_argument(
        "--limit-train",
        type=int,
        help="use only the first N training images (before the split; default: all 50,000)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the training images held out "
        "for the objective (default: 0.1, i.e. 45,000 / 5,000)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the split, the oracle and the training"
    )
    add_flags(p, RUN_SETTINGS[:2])
    p.add_argument(
        "--space",
        choices=SPACES,
        default="reference",
        help="reference: the model and peak LR around "
        "the reference; wide: also the residual stem, max pooling, whitening, label smoothing, weight decay, EMA",
    )
    g = p.add_argument_group("how each trial trains (train's own flags)")
    add_flags(g, RUN_SETTINGS[2:])
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    return p


def parse_args(argv: list[str] | None = None) -> Namespace:
    """Parse and check the search flags; bad values exit with code 2 and one line."""
    p = parser()
    args = p.parse_args(argv)
    try:
        check_config({name: getattr(args, name) for name in RUN_SETTINGS})
    except UserError as e:
        p.error(in_flag_terms(str(e)))
    for flag in ("epochs", "max_trials", "max_params"):
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


def settings(args: Namespace) -> dict:
    """The flags that define the search, recorded in search.json and result.json."""
    return {k: getattr(args, k) for k in ("max_trials", *SETTINGS)}


def check_out(out: Path) -> None:
    """--out must be a search folder (one the tuner or the launcher made), or not exist yet."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out}: is a file, not a search folder")
    markers = ("oracle.json", "search.json", "logs")  # logs/: the launcher made it for its children
    contents = [p for p in out.iterdir() if p.name != LOCK_NAME] if out.is_dir() else []
    if contents and not any((out / m).exists() for m in markers):
        raise UserError(f"out={out}: a folder that is not a search folder; pick a new one")

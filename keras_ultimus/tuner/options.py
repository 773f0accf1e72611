"""The search's settings, typed once (`SearchOptions`), and its command-line options; they import no Keras.

`tune` and `launch` share them. Each search setting's type, default, range and help is a field of
`SearchOptions`, as each run setting's is in `keras_ultimus.config`; the flags are generated from both.
"""

import dataclasses
from argparse import Namespace
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from keras_ultimus.config import check_config
from keras_ultimus.constants import SPACES
from keras_ultimus.errors import ArgumentParser, UserError, in_flag_terms, prog
from keras_ultimus.fields import check_range, setting
from keras_ultimus.flags import add_flags
from keras_ultimus.runs.folder import LOCK_NAME

PROG = "python -m keras_ultimus.tuner.tune"
ALGORITHMS = ("hyperband", "bayesian", "random")
MAX_PARAMS = 250_000  # the trainable-parameter budget of a searched model


@dataclass(frozen=True)
class SearchOptions:
    """The settings of a search that are not run settings: the algorithm, its budget, its data split, its space."""

    algorithm: str = setting(
        "hyperband",
        "KerasTuner's search algorithm (bayesian needs scikit-learn)",
        "str",
        choices=ALGORITHMS,
    )
    max_trials: int | None = setting(
        None,
        "stop after this many trials (default: 10 for bayesian/random; for hyperband, its own schedule)",
        "int",
        minimum=1,
    )
    epochs: int = setting(
        4, "epochs per trial (hyperband: the most for one model)", "int", minimum=1
    )
    max_params: int = setting(
        MAX_PARAMS,
        "trainable-parameter budget; larger configurations are listed, not trained (default: 250000)",
        "int",
        minimum=1,
    )
    limit_train: int | None = setting(
        None,
        "use only the first N training images (before the split; default: all 50,000)",
        "int",
        minimum=2,
    )
    val_fraction: float = setting(
        0.1,
        "share of the training images held out for the objective (default: 0.1, i.e. 45,000 / 5,000)",
        "float",
        above=0,
        below=1,
    )
    seed: int = setting(0, "seeds the split, the oracle and the training", "int")
    space: str = setting(
        "reference",
        "reference: the model and peak LR around the reference; wide: also the residual stem, max pooling, "
        "whitening, label smoothing, weight decay, EMA",
        "str",
        choices=SPACES,
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_range(f, getattr(self, f.name))


SEARCH_FIELDS = {f.name: f for f in dataclasses.fields(SearchOptions)}
# The run settings a search takes from the run config (`keras_ultimus.config`): flags, types and ranges.
RUN_SETTINGS = ("limit_test", "batch_size", "precision", "jit", "pipeline", "distribute", "devices")
# Flags that define a search; resuming with other values would mix two searches.
# (--max-trials may change: a search can be resumed with a larger budget.)
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
    search = [name for name in SEARCH_FIELDS if name != "space"]
    add_flags(p, search, fields=SEARCH_FIELDS)
    add_flags(p, RUN_SETTINGS[:2])
    add_flags(p, ["space"], fields=SEARCH_FIELDS)
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
        search_options(args)
    except UserError as e:
        p.error(in_flag_terms(str(e)))
    if args.algorithm == "bayesian" and find_spec("sklearn") is None:
        p.error("--algorithm bayesian needs scikit-learn: pip install scikit-learn")
    return args


def search_options(args: Namespace) -> SearchOptions:
    """The search settings among parsed flags, checked against their ranges (a UserError names the first bad one)."""
    return SearchOptions(**{name: getattr(args, name) for name in SEARCH_FIELDS})


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

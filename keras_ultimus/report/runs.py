"""Read training runs: a run folder's `log.csv` and `run.json`, checked, into a `Run`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from keras_ultimus.errors import MissingFileError, UserError, one_line
from keras_ultimus.runs.folder import CSV_NAME, INFO_NAME

if TYPE_CHECKING:
    import keras

    from keras_ultimus.report.predictions import Evaluation

REQUIRED_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
OPTIONAL_COLUMNS = ("learning_rate", "epoch_seconds")


@dataclass
class Run:
    """One run folder: its CSV log (epochs 1-based), run.json, model and test-split evaluation."""

    name: str
    folder: Path
    log: pd.DataFrame
    info: dict
    model: keras.Model | None = None
    model_note: str = ""
    skipped: str = ""  # why the test-split evaluation was skipped
    evaluation: Evaluation | None = None


def require_file(path: Path) -> Path:
    """`path` if it is a file; else a one-line UserError saying what is there instead."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a file")
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file")
    return path


def require_folder(path: Path, what: str = "run folder") -> Path:
    """`path` if it is a folder; else a one-line UserError saying what is there instead."""
    if path.is_file():
        raise UserError(f"{path}: is a file, expected a {what}")
    if not path.is_dir():
        raise UserError(f"{path}: no such {what}")
    return path


def read_table(
    path: Path, required: tuple[str, ...], numeric: tuple[str, ...], gaps: bool = False, **read_csv
) -> pd.DataFrame:
    """Read a CSV having the `required` columns; `numeric` ones become numbers (gaps allowed if `gaps`)."""
    try:
        table = pd.read_csv(require_file(path), **read_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"{path}: not a readable CSV ({one_line(e)})") from None
    for column in required:
        if column not in table.columns:
            raise UserError(f"{path}: missing column '{column}'")
    for column in (c for c in numeric if c in table.columns):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = ~np.isfinite(values) & (table[column].notna() | (not gaps))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UserError(
                f"{path}: column '{column}' has malformed value {table[column].iloc[row]!r} on line {row + 2}"
            )
        table[column] = values
    return table


def read_log(path: Path) -> pd.DataFrame:
    """Read and check a run's CSV log; epochs become 1-based, as Keras prints them."""
    log = read_table(path, REQUIRED_COLUMNS, (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))
    if log.empty:
        raise UserError(f"{path}: no epochs logged")
    if (log["epoch"] % 1 != 0).any() or log["epoch"].duplicated().any():
        raise UserError(f"{path}: column 'epoch' must hold distinct whole numbers")
    log = log.sort_values("epoch").reset_index(drop=True)
    log["epoch"] = log["epoch"].astype(int) + 1
    return log


def read_json(path: Path, required: bool = True) -> dict:
    """A JSON object from `path`; {} if it is absent and not `required`."""
    if not required and not path.exists():
        return {}
    try:
        data = json.loads(require_file(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({one_line(e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    return data


def read_info(path: Path) -> dict:
    """A run's run.json, which must hold its `config`."""
    info = read_json(path)
    if not isinstance(info.get("config"), dict):
        raise UserError(f"{path}: missing key 'config'")
    return info


def read_run(folder: Path, name: str) -> Run:
    """Read a run folder's CSV log and run.json."""
    require_folder(folder)
    return Run(name, folder, read_log(folder / CSV_NAME), read_info(folder / INFO_NAME))


def run_names(folders: list[Path]) -> list[str]:
    """Short unique names for the runs: folder names, numbered when they clash."""
    names = [f.resolve().name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names, start=1)]
    return names

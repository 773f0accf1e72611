"""A run folder's file names, and the atomic writes that keep every file in it whole or absent. Imports no Keras."""

import os
from pathlib import Path

from keras_ultimus.errors import UserError

CSV_NAME = "log.csv"
INFO_NAME = "run.json"
MODEL_NAME = "model.keras"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` through a temporary file, flushed to disk and then renamed, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def check_new_folder(out: Path) -> None:
    """A new run folder must not exist yet (an empty folder is fine), nor sit below a file."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out}: run folder exists; pick a new --out or --resume it")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"--out {out}: {parent} is a file, not a folder")

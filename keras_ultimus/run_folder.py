"""A run folder's file names, and the atomic writes that keep every file in it whole or absent. Imports no Keras."""

import os
from pathlib import Path

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

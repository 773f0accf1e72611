"""Load a saved `.keras` model for inference, with a one-line error for a bad file."""

import os
from pathlib import Path

import keras

import keras_ultimus.layers  # noqa: F401  registers UltimusLayer for loading
import keras_ultimus.schedules  # noqa: F401  registers OneCycle for loading
from keras_ultimus.errors import UserError


def load_keras_model(path: str | os.PathLike) -> keras.Model:
    """Load a `.keras` file, or a run folder's `model.keras`, for inference."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if path.suffix != ".keras" or not path.is_file():
        raise UserError(f"{path}: not a .keras file or a run folder with model.keras")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # a corrupt zip or config raises many different types
        raise UserError(f"{path}: cannot load model ({type(e).__name__}: {e})".splitlines()[0]) from None

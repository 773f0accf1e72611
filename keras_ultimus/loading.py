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


def float32_copy(model: keras.Model) -> keras.Model:
    """The same model computing in float32, for serving a model trained under a mixed-precision policy.

    Mixed-precision training keeps float32 weights, but a loaded model would
    still compute in bfloat16/float16 as its layers' saved policy says.
    """
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    copy = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
    )
    copy.set_weights(model.get_weights())
    return copy

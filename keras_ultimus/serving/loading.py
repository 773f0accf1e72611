"""Load models for inference: `.keras` files, and any model `predict` and `bench` take, as a predictor."""

import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from keras_ultimus.backend import INSTALL
from keras_ultimus.errors import MissingFileError, UserError, one_line
from keras_ultimus.models.saving import deflate, save_for_inference  # noqa: F401  importable from here too

Predictor = Callable[[np.ndarray], np.ndarray]


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
        raise UserError(
            f"{path}: cannot load model ({type(e).__name__}: {e})".splitlines()[0]
        ) from None


def float32_copy(model: keras.Model) -> keras.Model:
    """The same model computing in float32, for serving a model trained under a mixed-precision policy.

    Mixed-precision training keeps float32 weights, but a loaded model would
    still compute in bfloat16/float16 as its layers' saved policy says.
    """
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    copy = keras.models.clone_model(
        model,
        clone_function=lambda layer: layer.__class__.from_config(
            {**layer.get_config(), "dtype": "float32"}
        ),
    )
    copy.set_weights(model.get_weights())
    return copy


def saved_model_dir(path: Path) -> Path | None:
    """The SavedModel in `path` itself, else its highest integer version folder."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name), default=None)


def load_predictor(path: str | os.PathLike) -> Predictor:
    """Load MODEL as a function from uint8 images (N, 32, 32, 3) to probabilities (N, 10)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or folder")
    if path.suffix == ".onnx" and path.is_file():
        return onnx_predictor(path)
    if path.is_dir() and (found := saved_model_dir(path)):
        return saved_model_predictor(found)
    model = float32_copy(load_keras_model(path))
    # The backend's compiled predict step: a quarter less peak memory than eager calls (measured, README).
    return lambda images: keras.ops.convert_to_numpy(
        keras.ops.softmax(model.predict_on_batch(images.astype("float32")))
    )


def onnx_predictor(path: Path) -> Predictor:
    """An exported `.onnx` file run by onnxruntime (no TensorFlow, no Keras)."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(
            f"{path}: an ONNX model needs onnxruntime: pip install onnxruntime==1.32.0"
        ) from None
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for a bad file
        raise UserError(f"{path}: cannot load model ({type(e).__name__}: {one_line(e)})") from None
    return lambda images: session.run(["probabilities"], {"images": images})[0]


def saved_model_predictor(path: Path) -> Predictor:
    """An exported SavedModel's `serving_default` signature; the one model kind that needs TensorFlow."""
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError(
            f"{path}: a SavedModel needs TensorFlow ({INSTALL['tensorflow']}); "
            "predict on the .keras or .onnx file instead"
        ) from None
    try:
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    except Exception as e:  # TensorFlow raises many types for a bad SavedModel
        raise UserError(f"{path}: cannot load model ({type(e).__name__}: {one_line(e)})") from None
    return lambda images: serve(images=tf.constant(images))["probabilities"].numpy()

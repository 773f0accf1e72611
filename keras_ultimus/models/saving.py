"""Save slim `.keras` files for inference: no optimizer state, deflated, written atomically."""

import os
import zipfile
from pathlib import Path

import keras


def save_for_inference(model: keras.Model, path: str | os.PathLike) -> None:
    """Save `model` to a `.keras` file without optimizer state: a third of the size, all that inference reads.

    The file is written beside `path`, deflated, and then moved over it, so a kill never leaves half a model.
    """
    path = Path(path)
    copy = model.__class__.from_config(
        model.get_config()
    )  # uncompiled, unlike `clone_model`'s copy
    copy.set_weights(model.get_weights())
    partial = path.with_name(f".{path.stem}.partial.keras")
    copy.save(partial)
    deflate(partial)
    partial.replace(path)


def deflate(path: Path) -> None:
    """Recompress a `.keras` zip, which Keras stores uncompressed; its weights then take about 16% less room."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in members:
            archive.writestr(name, data)

"""Classify images with a trained or exported model: `python -m keras_ultimus.predict --help`.

MODEL is an exported SavedModel version folder, its base folder (the latest
version is used), an exported `.onnx` file, a `.keras` file or a run folder.
IMAGE is a PNG/JPEG of any size (resized to 32x32) or a `.npy` uint8 batch
of shape (N, 32, 32, 3).
"""

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from keras_ultimus.errors import UserError
from keras_ultimus.loading import load_keras_model
from keras_ultimus.model import CLASS_NAMES

Predictor = Callable[[np.ndarray], np.ndarray]
BATCH_SIZE = 256
TOP_K = 3


class ImageError(Exception):
    """An input that isn't a readable image; its message is one line naming the file."""


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
        raise UserError(f"{path}: no such file or folder")
    try:
        if path.suffix == ".onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            return lambda images: session.run(["probabilities"], {"images": images})[0]
        if path.is_dir() and (found := saved_model_dir(path)):
            serve = tf.saved_model.load(str(found)).signatures["serving_default"]
            return lambda images: serve(images=tf.constant(images))["probabilities"].numpy()
    except Exception as e:  # onnxruntime and TensorFlow raise many types for a bad file
        raise UserError(f"{path}: cannot load model ({type(e).__name__}: {e})".splitlines()[0]) from None
    model = load_keras_model(path)
    return lambda images: keras.ops.convert_to_numpy(
        keras.ops.softmax(model(images.astype("float32"), training=False))
    )


def read_images(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Names and uint8 pixels (N, 32, 32, 3) of one image file or `.npy` batch."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            batch = np.load(path, allow_pickle=False)
            batch = batch[None] if batch.ndim == 3 else batch
            if batch.dtype != np.uint8 or batch.shape[1:] != (32, 32, 3):
                raise ImageError(f"{path}: .npy must be uint8 (N, 32, 32, 3), got {batch.dtype} {batch.shape}")
            return [f"{path}[{i}]" for i in range(len(batch))], batch
        with Image.open(path) as image:
            image = image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
        return [str(path)], np.asarray(image, np.uint8)[None]
    except (OSError, ValueError, EOFError, Image.DecompressionBombError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ImageError(f"{path}: not a readable image ({reason.splitlines()[0]})") from None


def predict(predictor: Predictor, images: np.ndarray) -> np.ndarray:
    """Probabilities for `images`, in batches of BATCH_SIZE."""
    batches = [predictor(images[i : i + BATCH_SIZE]) for i in range(0, len(images), BATCH_SIZE)]
    return np.concatenate(batches) if batches else np.zeros((0, len(CLASS_NAMES)), np.float32)


def top_classes(probabilities: np.ndarray, k: int = TOP_K) -> list[list[dict]]:
    """The `k` most likely classes per row, most likely first."""
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return [
        [{"class_id": int(c), "class_name": CLASS_NAMES[c], "probability": float(row[c])} for c in top]
        for row, top in zip(probabilities, order)
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="python -m keras_ultimus.predict", description=__doc__.split(":")[0] + ".")
    p.add_argument("model", metavar="MODEL", help="SavedModel (version or base folder), .onnx, .keras or run folder")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG/JPEG file or .npy uint8 (N, 32, 32, 3) batch")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Predict every readable image; exit 1 if any could not be read."""
    args = parse_args(argv)
    try:
        predictor = load_predictor(args.model)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names, pixels, failed = [], [], 0
    for path in args.images:
        try:
            batch_names, batch = read_images(path)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        names += batch_names
        pixels.append(batch)
    images = np.concatenate(pixels) if pixels else np.zeros((0, 32, 32, 3), np.uint8)
    results = [{"image": n, "top": top} for n, top in zip(names, top_classes(predict(predictor, images)))]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['image']}: " + ", ".join(f"{t['class_name']} {t['probability']:.3f}" for t in r["top"]))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

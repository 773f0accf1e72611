"""Evaluate saved run models on the CIFAR-10 test split: predictions, attention maps, re-checks."""

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from keras_ultimus.config import model_kwargs
from keras_ultimus.datasets.cifar10 import load_cifar10
from keras_ultimus.errors import UserError, one_line
from keras_ultimus.models.layers import UltimusLayer
from keras_ultimus.models.ultimus import build_model
from keras_ultimus.report.predictions import Evaluation
from keras_ultimus.report.runs import Run, read_info, read_log
from keras_ultimus.runs.folder import CSV_NAME, INFO_NAME, MODEL_NAME
from keras_ultimus.serving.loading import load_keras_model
from keras_ultimus.training import evaluation
from keras_ultimus.training.fitting import progress_bars

BATCH_SIZE = 250


@dataclass
class Check:
    """A saved model's test accuracy, measured again, beside the one its run logged."""

    model_path: Path
    images: int
    correct: int
    logged: float  # the log's final val_accuracy
    epoch: int  # 1-based
    log_name: (
        str  # the log file it was checked against: log.csv, or NAME-log.csv in a multi-run report
    )
    # With flip and multi-crop test-time augmentation: separate figures, never the ones checked against the log.
    tta_correct: int = 0
    multicrop_correct: int = 0

    @property
    def accuracy(self) -> float:
        """The re-measured test accuracy."""
        return self.correct / self.images

    @property
    def tta_accuracy(self) -> float:
        """The test accuracy with flip TTA (the mean of the logits of each image and its mirror image)."""
        return self.tta_correct / self.images

    @property
    def multicrop_accuracy(self) -> float:
        """The test accuracy with multi-crop TTA (flip plus one-pixel shifts, 6 views)."""
        return self.multicrop_correct / self.images

    @property
    def logged_correct(self) -> int:
        """The logged accuracy as a count of images (CSVLogger writes float32 values)."""
        return round(self.logged * self.images)


def attention_model(model: keras.Model) -> keras.Model:
    """`model` with one more output per Ultimus block of per-sample (`"sample"`) attention: its attention map.

    Each block gets a twin holding a copy of its weights, called with `return_attention_scores=True`:
    a Keras functional graph can't hold a second call of the same layer whose
    outputs have another structure than its first call's.
    """
    scores = []
    for block in (
        layer
        for layer in model.layers
        if isinstance(layer, UltimusLayer) and layer.attention == "sample"
    ):
        twin = UltimusLayer.from_config({**block.get_config(), "name": f"{block.name}_attention"})
        scores.append(twin(block.input, return_attention_scores=True)[1])
        twin.set_weights(block.get_weights())
    return keras.Model(model.inputs, [model.outputs[0], *scores])


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Predict class probabilities and mean attention maps on the test images (a progress bar on a terminal)."""
    # In a log file, the caller's one line ("Evaluating ... on N test images") says it all.
    outputs = attention_model(model).predict(
        images.astype("float32"), batch_size=BATCH_SIZE, verbose=1 if progress_bars() else 0
    )
    # Without an Ultimus block (`num_blocks=0`), the model has one output and predict returns it bare.
    logits, *scores = outputs if isinstance(outputs, list) else [outputs]
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return Evaluation(
        images, labels, probs, [np.asarray(s, np.float64).mean(axis=0) for s in scores]
    )


def load_test_split(data: str | None, hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 test images and labels from `data` (default: $CIFAR10_PATH, else TFDS)."""
    try:
        _, test = load_cifar10(data)
    except UserError as e:
        raise UserError(f"{one_line(e)}{hint}") from None
    return test


def attach_models(runs: list[Run], data: str | None, no_model: bool) -> None:
    """Load each run's saved model and evaluate it on the test split; else build it from the config."""
    for run in runs:
        saved = run.folder / MODEL_NAME
        if saved.exists() and not no_model:
            run.model, run.model_note = (
                load_keras_model(saved),
                "From the run's saved `model.keras`.",
            )
            continue
        run.skipped = "`--no-model`" if no_model else "no `model.keras` in the run folder"
        run.model_note = f"Built from run.json's config ({run.skipped})."
        try:
            run.model = build_model(**model_kwargs(run.info["config"]))
        except (ValueError, TypeError) as e:
            raise UserError(
                f"{run.folder / INFO_NAME}: config can't build the model ({e})"
            ) from None
    to_evaluate = [run for run in runs if not run.skipped]
    if not to_evaluate:
        return
    x_test, y_test = load_test_split(data, hint=" (or pass --no-model)")
    for run in to_evaluate:
        limit = run.info["config"].get("limit_test")
        print(f"Evaluating {run.name} on {len(x_test[:limit]):,} test images")
        run.evaluation = evaluate(run.model, x_test[:limit], y_test[:limit])


def check_saved_model(path: Path, data: str | None) -> Check:
    """Re-evaluate a run's `model.keras` on the test images its run validated on, in the same batches.

    `path` is a run folder or a `.keras` file inside one; the folder's log.csv
    and run.json say what the run logged, on how many test images (its
    `limit_test`) and in which batch size. A report on several runs names each
    run's files after it, so `NAME-model.keras` is checked against
    `NAME-log.csv` and `NAME-run.json`.
    """
    if not path.exists():
        raise UserError(f"{path}: no such run folder or model file")
    folder = path if path.is_dir() else path.parent
    prefix = (
        path.name[: -len(MODEL_NAME)]
        if path.is_file() and path.name.endswith(f"-{MODEL_NAME}")
        else ""
    )
    log, info = read_log(folder / f"{prefix}{CSV_NAME}"), read_info(folder / f"{prefix}{INFO_NAME}")
    model = load_keras_model(path)
    x_test, y_test = load_test_split(data or recorded_data(info))
    limit, batch_size = (
        info["config"].get("limit_test"),
        info["config"].get("batch_size", BATCH_SIZE),
    )
    x_test, y_test = x_test[:limit], y_test[:limit]
    correct = {
        key: int(np.sum(np.argmax(x, axis=-1) == y_test))
        for key, x in evaluation.tta_logits(model, x_test, batch_size, "multicrop").items()
    }
    model_path = path / MODEL_NAME if path.is_dir() else path
    return Check(
        model_path,
        len(y_test),
        correct["test_accuracy"],
        float(log["val_accuracy"].iloc[-1]),
        int(log["epoch"].iloc[-1]),
        f"{prefix}{CSV_NAME}",
        correct["test_accuracy_flip_tta"],
        correct["test_accuracy_multicrop_tta"],
    )


def recorded_data(info: dict) -> str | None:
    """The data path a run recorded in run.json, if it is there on this machine; else None ($CIFAR10_PATH, TFDS)."""
    data = info.get("config", {}).get("data")
    return data if isinstance(data, str) and Path(data).exists() else None

"""Train from Python: `model, history = keras_ultimus.fit(epochs=2)`, the notebook face of `ultimus-train`."""

import os
from pathlib import Path

import numpy as np

from keras_ultimus.config import check_config, check_settings, default_config
from keras_ultimus.errors import UserError
from keras_ultimus.runs.folder import FolderLock, check_folder_path, check_new_folder
from keras_ultimus.training.result import FitResult

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def fit(
    data: str | os.PathLike | Arrays | None = None,
    out: str | os.PathLike | None = None,
    verbose: str | int = "auto",
    **settings,
) -> FitResult:
    """Train the Ultimus model as `python -m keras_ultimus.train` does; return the model, its `History` and more.

    The `FitResult` unpacks as `model, history`; it also holds the last epoch's figures (`final`), the run folder
    (`folder`) and the run record (`info`, run.json's contents when there is a folder).

    Args:
        data: the local CIFAR-10 copy (`cifar-10-binary.tar.gz` or
            `cifar-10-batches-bin/`), or in-memory arrays
            `((x_train, y_train), (x_test, y_test))` of uint8 NHWC images and
            integer labels. Defaults to `$CIFAR10_PATH`, else TFDS.
        out: a new run folder to write (log.csv, run.json, checkpoints,
            model.keras), resumable with `python -m keras_ultimus.train
            --resume`. Defaults to `None`: nothing is written.
        verbose: `model.fit`'s verbosity. Defaults to `"auto"`.
        **settings: any run-config key of `train` (its flag names with `_`:
            `epochs=2`, `conv_widths=[16, 32]`, `label_smoothing=0.1`, ...),
            checked as `--config` checks them.

    Example:

    ```python
    import keras_ultimus

    model, history = keras_ultimus.fit(epochs=2, limit_train=2000)
    history.history["val_accuracy"]

    result = keras_ultimus.fit(epochs=2, limit_train=2000, out="runs/notebook")
    result.final["val_accuracy"], result.folder
    ```
    """
    from keras_ultimus.training.recipe import check_model, fit_run

    config = {
        **default_config(),
        **check_settings(settings, "keras_ultimus.fit", "keras_ultimus.fit"),
    }
    if config["max_lr"] == "auto":
        raise UserError(
            "keras_ultimus.fit: max_lr='auto' runs only from the train command; give a number"
        )
    if config["distribute"] != "none" or config["devices"]:
        raise UserError(
            "keras_ultimus.fit trains on one device: distribute='none' and no devices; "
            "spread a run with the train command"
        )
    check_config(config)  # the ranges train checks: epochs, batch size, peak LR, recipe options...
    config = check_model(
        config
    )  # parses conv_widths and downsample strings, checks the model settings
    arrays = check_arrays(data) if isinstance(data, tuple) else None
    config["data"] = (
        None if arrays else str(data) if data is not None else os.environ.get("CIFAR10_PATH")
    )
    if arrays is None:
        from keras_ultimus.datasets.cifar10 import load_cifar10

        arrays = load_cifar10(config["data"])
    if out is None:
        return fit_run(config, arrays, command="keras_ultimus.fit", verbose=verbose)
    out = Path(out)
    check_folder_path(out)
    with FolderLock(out):
        check_new_folder(out)
        return fit_run(config, arrays, out, command="keras_ultimus.fit", verbose=verbose)


def check_arrays(data: tuple) -> Arrays:
    """Check in-memory CIFAR-10-shaped arrays: uint8 (N, 32, 32, 3) images and N integer labels per split."""
    try:
        (x_train, y_train), (x_test, y_test) = data
    except (TypeError, ValueError):
        raise UserError(
            "keras_ultimus.fit: data must be a path or ((x_train, y_train), (x_test, y_test))"
        ) from None
    checked = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y).reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise UserError(
                f"keras_ultimus.fit: x_{split} must be uint8 of shape (N, 32, 32, 3), got "
                f"{x.dtype} {x.shape}"
            )
        if (
            len(y) != len(x)
            or not np.issubdtype(y.dtype, np.integer)
            or len(y)
            and not 0 <= y.min() <= y.max() < 10
        ):
            raise UserError(
                f"keras_ultimus.fit: y_{split} must hold one integer label in 0-9 per image"
            )
        checked.append((x, y.astype(np.int32)))
    return tuple(checked)

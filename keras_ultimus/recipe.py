"""The training recipe shared by `train` and the tuner: compile, callbacks, run folders, `fit`."""

import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from keras_ultimus.data import make_dataset
from keras_ultimus.model import build_model
from keras_ultimus.schedules import OneCycle

CSV_NAME = "log.csv"
MODEL_ARGS = ("num_blocks", "key_dim", "scale", "residual", "conv_widths", "bn_momentum")


class EpochStats(keras.callbacks.Callback):
    """Add the learning rate and the epoch's wall time to the logs for CSVLogger."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        logs["epoch_seconds"] = round(time.perf_counter() - self._start, 2)


class TrimLog(keras.callbacks.Callback):
    """After BackupAndRestore, drop CSV rows of epochs that will run again."""

    def __init__(self, csv_path: Path, steps_per_epoch: int, checkpoint: keras.callbacks.ModelCheckpoint):
        super().__init__()
        self.csv_path, self.steps_per_epoch, self.checkpoint = csv_path, steps_per_epoch, checkpoint

    def on_train_begin(self, logs=None):
        done = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) // self.steps_per_epoch
        if done and self.csv_path.exists():
            log = pd.read_csv(self.csv_path)
            log = log[log["epoch"] < done]
            log.to_csv(self.csv_path, index=False)
            self.checkpoint.best = float(log["val_accuracy"].max())
            print(f"Resumed after epoch {done}.")


def compile_model(model: keras.Model, max_lr: float, total_steps: int, pct_start: float = 0.25) -> None:
    """Compile with Adam on the one-cycle schedule, sparse CE on logits, accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(OneCycle(max_lr, total_steps, pct_start)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def model_kwargs(config: dict) -> dict:
    """Pick the `build_model` arguments out of a run config."""
    return {k: config[k] for k in MODEL_ARGS if k in config}


def environment() -> dict:
    """Backend, library versions and machine, for run.json."""
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    for name in ("tensorflow", "torch", "jax"):
        if name in sys.modules:
            versions[name] = sys.modules[name].__version__
    return {
        "backend": keras.backend.backend(),
        "versions": versions,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }


def write_atomic(path: Path, text: str) -> None:
    """Write `text` through a temporary file, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def train(config: dict, out: Path, data: tuple, resume: bool = False, command: str = "") -> dict:
    """Fit the model described by `config` on `data` into run folder `out`; return run.json."""
    keras.utils.set_random_seed(config["seed"])
    (x_train, y_train), (x_test, y_test) = data
    x_train, y_train = x_train[: config["limit_train"]], y_train[: config["limit_train"]]
    x_test, y_test = x_test[: config["limit_test"]], y_test[: config["limit_test"]]
    train_ds = make_dataset(x_train, y_train, config["batch_size"], True, config["augment"], config["seed"])
    test_ds = make_dataset(x_test, y_test, config["batch_size"])
    steps = -(-len(x_train) // config["batch_size"]) * config["epochs"]

    model = build_model(**model_kwargs(config))
    compile_model(model, config["max_lr"], steps, config["pct_start"])
    csv_path = out / CSV_NAME
    best = keras.callbacks.ModelCheckpoint(
        out / "best.keras", monitor="val_accuracy", mode="max", save_best_only=True
    )
    # double_checkpoint keeps the previous backup, in case a kill lands mid-write.
    backup = keras.callbacks.BackupAndRestore(out / "backup", double_checkpoint=True)
    run_info = json.loads((out / "run.json").read_text()) if resume else {
        "config": config, "command": command, **environment(),
        "started": datetime.now().isoformat(timespec="seconds"), "segments_seconds": [],
    }
    if not resume:
        with open(out / "summary.txt", "w") as f:
            model.summary(print_fn=lambda line, **_: f.write(line + "\n"))
        model.summary()
    write_atomic(out / "run.json", json.dumps(run_info, indent=2))

    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=test_ds,
        epochs=config["epochs"],
        # On each epoch's end the CSV row is written before the backup, and on resume
        # TrimLog drops rows the restored state hasn't seen, so every epoch is logged once.
        callbacks=[
            EpochStats(),
            keras.callbacks.CSVLogger(csv_path, append=True),
            best,
            backup,
            TrimLog(csv_path, steps // config["epochs"], best),
        ],
    )
    model.save(out / "model.keras")
    run_info["segments_seconds"].append(round(time.perf_counter() - start, 1))
    run_info["wall_seconds"] = round(sum(run_info["segments_seconds"]), 1)
    run_info["finished"] = datetime.now().isoformat(timespec="seconds")
    run_info["final"] = pd.read_csv(csv_path).iloc[-1].to_dict()
    write_atomic(out / "run.json", json.dumps(run_info, indent=2))
    return run_info

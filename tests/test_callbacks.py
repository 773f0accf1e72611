"""The run's callbacks that change what Keras writes: log.csv's column order (the CSVLogger contract it relies on
is in tests/test_contracts.py)."""

import keras
import numpy as np
import pytest

from keras_ultimus.training.callbacks import OrderedCSVLogger

README_ORDER = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"]
LOGS = {"accuracy": 0.5, "epoch_seconds": 1.5, "learning_rate": 0.001, "loss": 1.25, "val_accuracy": 0.4,
        "val_loss": 1.5}


def header(path) -> list[str]:
    return path.read_text().splitlines()[0].split(",")


def test_log_columns_follow_the_readme_and_unknown_ones_come_last(tmp_path):
    logger = OrderedCSVLogger(tmp_path / "log.csv", append=True)
    logger.on_train_begin()
    logger.on_epoch_end(0, {**LOGS, "a_new_metric": 1.0})
    logger.on_train_end()
    assert header(tmp_path / "log.csv") == [*README_ORDER, "a_new_metric"]


def test_an_appended_log_keeps_its_own_header(tmp_path):
    old = ["epoch", "accuracy", "epoch_seconds", "learning_rate", "loss", "val_accuracy", "val_loss"]
    (tmp_path / "log.csv").write_text(",".join(old) + "\n0,0.1,1,0.001,2.0,0.1,2.0\n")
    logger = OrderedCSVLogger(tmp_path / "log.csv", append=True)
    logger.on_train_begin()
    logger.on_epoch_end(1, LOGS)
    logger.on_train_end()
    rows = [line.split(",") for line in (tmp_path / "log.csv").read_text().splitlines()]
    assert rows[0] == old and len(rows) == 3
    assert dict(zip(old, map(float, rows[2]))) == pytest.approx({"epoch": 1, **LOGS})


def test_fit_writes_the_readme_order(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.zeros((4, 2), "float32"), np.zeros(4, "int32")
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[OrderedCSVLogger(tmp_path / "log.csv")])
    assert header(tmp_path / "log.csv") == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]

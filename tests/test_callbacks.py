"""The run's callbacks that change what Keras writes: log.csv's column order (the CSVLogger contract it relies on
is in tests/test_contracts.py)."""

import keras
import numpy as np
import pytest

from keras_ultimus.training.callbacks import OrderedCSVLogger

README_ORDER = [
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "epoch_seconds",
]
LOGS = {
    "accuracy": 0.5,
    "epoch_seconds": 1.5,
    "learning_rate": 0.001,
    "loss": 1.25,
    "val_accuracy": 0.4,
    "val_loss": 1.5,
}


def header(path) -> list[str]:
    return path.read_text().splitlines()[0].split(",")


def test_log_columns_follow_the_readme_and_unknown_ones_come_last(tmp_path):
    logger = OrderedCSVLogger(tmp_path / "log.csv", append=True)
    logger.on_train_begin()
    logger.on_epoch_end(0, {**LOGS, "a_new_metric": 1.0})
    logger.on_train_end()
    assert header(tmp_path / "log.csv") == [*README_ORDER, "a_new_metric"]


def test_an_appended_log_keeps_its_own_header(tmp_path):
    old = [
        "epoch",
        "accuracy",
        "epoch_seconds",
        "learning_rate",
        "loss",
        "val_accuracy",
        "val_loss",
    ]
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
    model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=1,
        verbose=0,
        callbacks=[OrderedCSVLogger(tmp_path / "log.csv")],
    )
    assert header(tmp_path / "log.csv") == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]


def test_the_backup_size_bound_covers_the_weights_file_keras_writes(tmp_path):
    from keras_ultimus.models.ultimus import build_model
    from keras_ultimus.training.callbacks import H5_OVERHEAD, backup_bytes

    model = build_model(conv_widths=(4, 8), num_blocks=1)
    model.compile(optimizer="adam", loss="mse")
    model.fit(
        np.zeros((4, 32, 32, 3), "float32"), np.zeros((4, 10)), epochs=1, verbose=0
    )  # Adam's slots
    model.save_weights(tmp_path / "w.weights.h5")
    written = (tmp_path / "w.weights.h5").stat().st_size
    assert written <= backup_bytes(model) <= written + H5_OVERHEAD


def test_claiming_space_past_a_file_size_limit_fails_in_python_and_leaves_nothing(tmp_path):
    import errno
    import subprocess
    import sys

    code = (
        "import resource, sys; from pathlib import Path\n"
        "from keras_ultimus.training.callbacks import claim_space\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "claim_space(Path(sys.argv[1]), 500)\n"
        "try:\n    claim_space(Path(sys.argv[1]), 5000)\n"
        "except OSError as e:\n    print(e.errno)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "w.h5")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(errno.EFBIG) and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "batches, epochs, printed", [(20, 2, True), (5, 2, True), (2, 2, True), (2, 1, False)]
)
def test_compile_time_is_the_first_two_steps_less_two_steady_ones_and_is_printed_once(
    batches, epochs, printed, monkeypatch, capsys
):
    from keras_ultimus.training import callbacks

    clock = iter(
        [0.0, 25.0, 50.0, *(50.0 + i for i in range(1, 40))]
    )  # 2 slow steps, then 1 s per step
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    timer = callbacks.CompileTime(steady=10)
    timer.on_train_begin()
    for epoch in range(epochs):
        for batch in range(batches):
            timer.on_train_batch_end(batch)
        timer.on_epoch_end(epoch)
    line = "jit: compiling took about 48 s (the first 2 steps: 50.0 s); then 1.00 s per step"
    assert capsys.readouterr().err.splitlines() == ([line] if printed else [])

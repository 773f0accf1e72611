"""The shared training recipe: loss scaling keeps the one-cycle position, TrimLog, the data fingerprint."""

import keras
import numpy as np
import pandas as pd
import pytest

from keras_ultimus.training import callbacks, compiling, recipe
from keras_ultimus.training.schedules import OneCycle

pytestmark = pytest.mark.multi_backend


def float16_model() -> keras.Model:
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    finally:
        keras.config.set_dtype_policy(before)


def batches_with_an_overflow():
    """4 batches of 8; batch 2 holds 1e6, which is inf in float16, so its gradients are not finite."""
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    x[16:24] = 1e6
    return x, np.arange(32) % 3


def lr(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_a_step_skipped_by_loss_scaling_still_moves_the_schedule():
    model = float16_model()
    compiling.compile_model(model, max_lr=0.01, total_steps=8, jit="off")
    optimizer = model.optimizer
    assert isinstance(optimizer, compiling.LossScaleOptimizer)
    x, y = batches_with_an_overflow()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    # The overflow halved the scale (the step was skipped) but every batch counts for the schedule.
    assert float(keras.ops.convert_to_numpy(optimizer.dynamic_scale)) < optimizer.initial_scale
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 4
    assert lr(optimizer) == pytest.approx(
        float(keras.ops.convert_to_numpy(OneCycle(0.01, 8)(4))), rel=1e-5
    )
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


def test_keras_loss_scaling_alone_would_fall_behind():
    """Why compiling.LossScaleOptimizer exists: Keras' own leaves `iterations` alone on a skipped step."""
    model = float16_model()
    model.compile(
        optimizer=keras.optimizers.Adam(OneCycle(0.01, 8)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = batches_with_an_overflow()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3


def test_loss_scale_optimizer_round_trips_through_a_keras_file(tmp_path):
    model = float16_model()
    compiling.compile_model(model, max_lr=0.01, total_steps=8, jit="off")
    x, y = batches_with_an_overflow()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(restored.optimizer, compiling.LossScaleOptimizer)
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 4


def test_float32_and_bfloat16_models_get_no_loss_scaling():
    for policy in ("float32", "mixed_bfloat16"):
        model = recipe.build({"conv_widths": [4, 8], "num_blocks": 1}, policy)
        compiling.compile_model(model, 0.01, 10)
        assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.get_layer("conv1").dtype_policy.name == policy
    assert keras.config.dtype_policy().name == "float32"  # build restores the global policy


@pytest.mark.parametrize("jit, expected", [("on", True), ("off", False)])
def test_jit_flag_reaches_compile(jit, expected):
    model = recipe.build({"conv_widths": [4, 8], "num_blocks": 1})
    compiling.compile_model(model, 0.01, 10, jit=jit)
    assert model.jit_compile is expected


def test_trim_log_drops_epochs_that_run_again_and_restores_the_best(tmp_path):
    csv = tmp_path / "log.csv"
    pd.DataFrame({"epoch": range(5), "val_accuracy": [0.1, 0.5, 0.3, 0.9, 0.2]}).to_csv(
        csv, index=False
    )
    best = keras.callbacks.ModelCheckpoint(
        tmp_path / "best.keras", monitor="val_accuracy", mode="max", save_best_only=True
    )
    trim = callbacks.TrimLog(csv, best)
    trim.on_epoch_begin(
        3
    )  # BackupAndRestore restored after epoch 2 (a skip-shifted step count can't fool it)
    trim.on_epoch_begin(4)  # only the first call trims
    assert pd.read_csv(csv)["epoch"].tolist() == [0, 1, 2] and best.best == 0.5


def test_trim_log_drops_epoch_0_when_a_kill_came_before_its_first_backup(tmp_path, capsys):
    csv = tmp_path / "log.csv"
    pd.DataFrame({"epoch": [0], "val_accuracy": [0.4]}).to_csv(csv, index=False)
    best = keras.callbacks.ModelCheckpoint(
        tmp_path / "best.keras", monitor="val_accuracy", mode="max", save_best_only=True
    )
    callbacks.TrimLog(csv, best).on_epoch_begin(0)  # no backup yet: fit starts again at epoch 0
    assert pd.read_csv(csv)["epoch"].tolist() == [] and "Resumed" not in capsys.readouterr().out


def test_trim_log_leaves_a_fresh_run_alone(tmp_path):
    csv = tmp_path / "log.csv"
    csv.touch()  # CSVLogger opens its file before the first epoch begins
    best = keras.callbacks.ModelCheckpoint(
        tmp_path / "best.keras", monitor="val_accuracy", save_best_only=True
    )
    callbacks.TrimLog(csv, best).on_epoch_begin(0)
    assert csv.read_text() == ""


def test_fingerprint_tells_data_apart():
    a = ((np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, np.int32)),) * 2
    b = ((np.zeros((2, 32, 32, 3), np.uint8), np.ones(2, np.int32)),) * 2
    assert (
        recipe.fingerprint(a) == recipe.fingerprint(tuple(map(tuple, a))) != recipe.fingerprint(b)
    )

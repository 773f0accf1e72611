"""The notebook API: `keras_ultimus.fit` trains from arrays or a path, returns a result (model and History first)."""

import io
import json
import sys
import types

import keras
import numpy as np
import pandas as pd
import pytest

import keras_ultimus
from keras_ultimus.errors import UserError
from keras_ultimus.training.fitting import progress_bars
from tests.helpers import random_arrays

pytestmark = pytest.mark.multi_backend


def test_fit_on_arrays_returns_the_model_and_history_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, history = keras_ultimus.fit(
        random_arrays(), epochs=2, batch_size=16, conv_widths=[4, 8], verbose=0
    )
    assert isinstance(model, keras.Model) and model.get_layer("conv2").filters == 8
    assert history.epoch == [0, 1] and len(history.history["val_accuracy"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_fit_returns_a_frozen_result_with_the_final_figures_and_no_folder():
    result = keras_ultimus.fit(
        random_arrays(), epochs=1, batch_size=16, conv_widths=[4, 8], verbose=0
    )
    assert result.folder is None and result.info["final"] is result.final
    assert result.final == {"epoch": 0, **{k: v[-1] for k, v in result.history.history.items()}}
    with pytest.raises(AttributeError):
        result.model = None


def test_whiten_sets_the_frozen_kernel_from_the_training_images_and_keeps_it():
    from keras_ultimus.models.whitening import whitening_kernel

    data = random_arrays()
    model, _ = keras_ultimus.fit(
        data, epochs=1, batch_size=16, conv_widths=[4, 8], whiten=True, verbose=0
    )
    kernel = keras.ops.convert_to_numpy(model.get_layer("whiten").kernel)
    np.testing.assert_array_equal(
        kernel, whitening_kernel(data[0][0])
    )  # set before training, frozen during it


def test_whitening_uses_the_unsharded_training_images_on_every_data_parallel_process():
    from keras_ultimus.models.whitening import whitening_kernel
    from keras_ultimus.training import distribute, recipe
    from keras_ultimus.training.run_config import default_config

    data = random_arrays()
    config = {
        **default_config(),
        "epochs": 1,
        "batch_size": 16,
        "conv_widths": [4, 8],
        "whiten": True,
    }
    plan = distribute.Plan(
        mode="data-parallel", replicas=2, processes=2, process_id=1
    )  # trains on every other image
    model = recipe.fit_run(config, data, plan=plan, verbose=0).model
    kernel = keras.ops.convert_to_numpy(model.get_layer("whiten").kernel)
    np.testing.assert_array_equal(kernel, whitening_kernel(data[0][0]))


def test_fit_with_out_writes_the_run_folder_train_writes(tmp_path, fake_cifar_tarball):
    out = tmp_path / "run"
    result = keras_ultimus.fit(
        str(fake_cifar_tarball),
        out=out,
        epochs=1,
        batch_size=32,
        conv_widths="4,8",
        label_smoothing=0.1,
        verbose=0,
    )
    model, history = result
    info = json.loads((out / "run.json").read_text())
    assert (result.model, result.history, result.folder) == (model, history, out)
    assert result.info == info and result.final == info["final"]
    assert info["config"]["conv_widths"] == [4, 8] and info["config"]["label_smoothing"] == 0.1
    assert (
        info["config"]["data"] == str(fake_cifar_tarball) and info["command"] == "keras_ultimus.fit"
    )
    log = pd.read_csv(out / "log.csv")
    assert log["val_accuracy"].tolist() == pytest.approx(history.history["val_accuracy"])
    assert (out / "model.keras").is_file()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epoch=2), "unknown key"),
        (dict(epochs="2"), "'epochs': expected int"),
        (dict(stem="unet"), "'stem': expected one of"),
        (dict(data=((np.zeros((4, 32, 32, 3)), np.zeros(4, int)),) * 2), "uint8"),
        (dict(data=((np.zeros((4, 32, 32, 3), np.uint8), np.full(4, 10)),) * 2), "label"),
        (dict(conv_widths=[4, 0]), "conv"),
        (dict(epochs=0), "epochs=0: must be at least 1"),
        (dict(max_lr=-1.0), "max_lr=-1.0: must be a positive number"),
        (dict(distribute="mirrored"), "one device"),
    ],
)
def test_bad_settings_and_data_are_one_line_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match) as error:
        keras_ultimus.fit(**{"data": random_arrays(), "epochs": 1, **kwargs})
    assert "\n" not in str(error.value)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_on_a_terminal_or_in_a_notebook_but_not_in_a_log_file(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not progress_bars()
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert progress_bars()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert progress_bars()

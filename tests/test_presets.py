"""The shipped presets: listed with their metadata, loaded as ready Keras models, used by predict and export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras_ultimus
from keras_ultimus import predict
from keras_ultimus.errors import UserError
from keras_ultimus.serving import presets

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["ultimus_faithful_cifar10", "ultimus_whiten_resnet_cifar10"]
ENV = {
    k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"
}  # the commands' own quiet logging


def test_list_presets_names_each_with_its_accuracy_and_the_run_that_made_it():
    listed = keras_ultimus.list_presets()
    assert sorted(listed) == NAMES == presets.preset_names()
    for name, meta in listed.items():
        assert 0.1 < meta["test_accuracy"] <= meta["test_accuracy_flip_tta"] < 1, name
        assert meta["test_images"] == 10_000 and meta["trainable_params"] > 100_000
        run = meta["run"]
        assert (
            run["command"].startswith("python -m keras_ultimus.train") and len(run["commit"]) == 40
        )
        assert (ROOT / run["report"] / run["model"]).read_bytes() == presets.preset_path(
            name
        ).read_bytes()


def test_preset_accuracy_is_the_report_figure():
    run = json.loads((ROOT / "reports/whiten-bs256-avgpool-cpu/s1-run.json").read_text())["final"]
    meta = keras_ultimus.list_presets()["ultimus_whiten_resnet_cifar10"]
    assert meta["test_accuracy"] == round(run["val_accuracy"], 4)
    assert meta["test_accuracy_flip_tta"] == run["test_accuracy_flip_tta"]
    assert (
        keras_ultimus.list_presets()["ultimus_faithful_cifar10"]["test_accuracy"] == 0.7161
    )  # reports/README.md


@pytest.mark.parametrize("name", NAMES)
def test_from_preset_is_a_ready_model_that_predicts(name):
    model = keras_ultimus.from_preset(name)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    logits = np.asarray(model.predict(images, verbose=0))
    assert logits.shape == (3, 10) and np.isfinite(logits).all()
    assert model.count_params() == keras_ultimus.list_presets()[name]["params"]


@pytest.mark.parametrize("name", ["nope", "../reports", ""])
def test_unknown_preset_names_the_valid_ones(name):
    with pytest.raises(ValueError) as error:  # a UserError, naming the Python argument
        keras_ultimus.from_preset(name)
    assert isinstance(error.value, UserError)
    assert str(error.value) == f"preset={name!r}: unknown preset; valid presets: {', '.join(NAMES)}"


@pytest.mark.real_data
@pytest.mark.parametrize("name", NAMES)
def test_preset_accuracy_on_real_test_images_is_consistent(name, real_cifar):
    from keras_ultimus.datasets.cifar10 import load_cifar10

    _, (x_test, y_test) = load_cifar10(real_cifar)
    x_test, y_test = x_test[:500], y_test[:500]
    logits = keras_ultimus.from_preset(name).predict(x_test.astype("float32"), verbose=0)
    accuracy = float(np.mean(np.argmax(logits, -1) == y_test))
    # 500 images: a standard error of about 2 points; 4 of them is a loose but failing bound.
    assert abs(accuracy - keras_ultimus.list_presets()[name]["test_accuracy"]) < 0.08, accuracy


def test_predict_help_lists_the_presets(capsys):
    with pytest.raises(SystemExit):
        predict.main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {name}: " in out for name in NAMES) and "--preset NAME" in out


def test_predict_with_a_preset_classifies_images(tmp_path, capsys):
    np.save(
        tmp_path / "images.npy",
        np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
    )
    assert predict.main(["--preset", NAMES[1], str(tmp_path / "images.npy"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [f"{tmp_path / 'images.npy'}[{i}]" for i in range(2)]
    assert all(len(r["top"]) >= 1 and 0 <= r["top"][0]["probability"] <= 1 for r in results)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--preset", "nope", "x.png"],
            f"--preset nope: unknown preset; valid presets: {', '.join(NAMES)}",
        ),
        (["--preset", NAMES[0]], "give MODEL (or --preset NAME) and at least one IMAGE"),
    ],
)
def test_predict_preset_errors_are_one_line(tmp_path, argv, message):
    result = subprocess.run(
        [sys.executable, "-m", "keras_ultimus.predict", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.slow
def test_export_a_preset_as_a_saved_model(tmp_path):
    pytest.importorskip("tensorflow")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_ultimus.export",
            "--preset",
            NAMES[1],
            "--out",
            str(tmp_path / "export"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
    refused = subprocess.run(
        [sys.executable, "-m", "keras_ultimus.export", "--preset", "nope"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert refused.returncode == 2 and refused.stderr.strip().startswith(
        "error: --preset nope: unknown preset"
    )

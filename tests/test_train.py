"""The training CLI end to end: run folder, refusals, bad data, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import keras
from keras_ultimus import train
from keras_ultimus.schedules import OneCycle

TINY = ["--conv-widths", "4,8,8", "--batch-size", "32"]
COLUMNS = ["epoch", "accuracy", "epoch_seconds", "learning_rate", "loss", "val_accuracy", "val_loss"]


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "keras_ultimus.train", *args],
                          capture_output=True, text=True, **kwargs)


@pytest.mark.multi_backend
def test_end_to_end_run_folder(tmp_path, fake_cifar_tarball):
    out = tmp_path / "run"
    assert train.main(["--data", str(fake_cifar_tarball), "--out", str(out), "--epochs", "2", *TINY]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["best.keras", "log.csv", "model.keras", "run.json", "summary.txt"]
    log = pd.read_csv(out / "log.csv")
    assert list(log.columns) == COLUMNS and log["epoch"].tolist() == [0, 1]
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["epochs"] == 2 and info["config"]["conv_widths"] == [4, 8, 8]
    assert info["backend"] == os.environ.get("KERAS_BACKEND", "tensorflow") and "keras" in info["versions"]
    assert info["machine"]["cpu_count"] == os.cpu_count() and info["wall_seconds"] > 0
    assert info["final"]["val_accuracy"] == pytest.approx(log["val_accuracy"].iloc[-1])
    model = keras.saving.load_model(out / "model.keras")
    assert model.get_layer("conv3").kernel.shape == (3, 3, 8, 8)
    assert "ultimus4" in (out / "summary.txt").read_text()
    # 100 images / 32 = 4 steps per epoch, 8 in all; the logged LR is the next step's.
    schedule = OneCycle(0.003, 8)
    expected = [float(keras.ops.convert_to_numpy(schedule(s))) for s in (4, 8)]
    np.testing.assert_allclose(log["learning_rate"], expected, rtol=1e-4)


def test_refuses_to_overwrite_a_run_folder(tmp_path, fake_cifar_tarball, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.csv").write_text("keep me")
    assert train.main(["--data", str(fake_cifar_tarball), "--out", str(out)]) == 2
    assert "run folder exists" in capsys.readouterr().err
    assert (out / "log.csv").read_text() == "keep me"


def test_bad_data_is_one_line_exit_2_and_no_run_folder(tmp_path):
    out = tmp_path / "run"
    result = run_cli("--data", str(tmp_path / "missing.tar.gz"), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing.tar.gz'}: no such file or folder"
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_help_lists_the_flags():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--epochs", "--batch-size", "--max-lr", "--data", "--out", "--seed", "--no-augment",
                 "--blocks", "--key-dim", "--scale", "--residual", "--limit-train", "--limit-test", "--resume"):
        assert flag in result.stdout


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    config = tmp_path / "best.json"
    config.write_text(json.dumps({"num_blocks": 6, "residual": True, "max_lr": 0.001}))
    args = train.parse_args(["--config", str(config), "--max-lr", "0.002"])
    assert (args.num_blocks, args.residual, args.max_lr, args.epochs) == (6, True, 0.002, 24)


def test_killed_run_resumes_with_every_epoch_logged_once(tmp_path, fake_cifar_tarball):
    out = tmp_path / "run"
    epochs = 12
    args = ["--data", str(fake_cifar_tarball), "--out", str(out), "--epochs", str(epochs), *TINY]
    proc = subprocess.Popen([sys.executable, "-m", "keras_ultimus.train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log_path = out / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log_path.exists() and len(log_path.read_text().splitlines()) >= 4:  # header + 3 epochs
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(pd.read_csv(log_path))
    assert 3 <= done < epochs, "the run was not killed mid-way"
    assert not (out / "model.keras").exists()

    result = run_cli("--resume", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    log = pd.read_csv(log_path)
    assert log["epoch"].tolist() == list(range(epochs))
    schedule = OneCycle(0.003, 4 * epochs)
    expected = [float(keras.ops.convert_to_numpy(schedule(4 * (e + 1)))) for e in range(epochs)]
    np.testing.assert_allclose(log["learning_rate"], expected, rtol=1e-4, atol=1e-9)
    info = json.loads((out / "run.json").read_text())
    assert len(info["segments_seconds"]) == 1 and (out / "model.keras").exists()


@pytest.mark.real_data
def test_a_few_steps_on_real_cifar10(tmp_path, real_cifar):
    out = tmp_path / "run"
    assert train.main(["--data", real_cifar, "--out", str(out), "--epochs", "1",
                       "--limit-train", "1024", "--limit-test", "512"]) == 0
    log = pd.read_csv(out / "log.csv")
    assert np.isfinite(log["loss"]).all() and 0.0 <= log["val_accuracy"].iloc[0] <= 1.0
    assert json.loads((out / "run.json").read_text())["config"]["data"] == real_cifar


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--batch-size", "-1"], ["--max-lr", "0"],
                                   ["--limit-train", "0"], ["--pct-start", "1.5"], ["--blocks", "0"]])
def test_bad_flag_values_exit_2(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(flags)
    assert exit_info.value.code == 2
    assert flags[0] in capsys.readouterr().err


def test_resume_refuses_a_finished_run(tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"config": {}, "finished": "2026-01-01T00:00:00"}))
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert "already finished" in capsys.readouterr().err

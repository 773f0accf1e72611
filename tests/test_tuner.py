"""Tests for tuner/: the search space, the CLI, resuming, and chief/worker distribution."""

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest

from keras_ultimus import recipe, train
from keras_ultimus.data import load_local
from keras_ultimus.layers import UltimusLayer
from keras_ultimus.model import build_model
from tuner import tune
from tuner.hypermodel import SPACE, UltimusHyperModel

REPO = Path(__file__).resolve().parents[1]
TUNE = [sys.executable, str(REPO / "tuner" / "tune.py")]
LAUNCH = [sys.executable, str(REPO / "tuner" / "launch.py")]
TINY = ["--batch-size", "16", "--conv-widths", "4,8,8"]  # 90 fit / 10 val images of the fake data
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def oracle_records(out: Path) -> dict[str, dict]:
    """Every trial.json the oracle wrote, by trial id."""
    return {
        r["trial_id"]: r
        for r in (json.loads(p.read_text()) for p in out.glob("trial_*/trial.json"))
    }


def assert_leaderboard_matches_oracle(out: Path) -> pd.DataFrame:
    """The leaderboard has one row per oracle trial, with its status, score and values."""
    table = pd.read_csv(out / "leaderboard.csv", dtype={"trial_id": str, "tuner/trial_id": str})
    records = oracle_records(out)
    assert sorted(table["trial_id"]) == sorted(records)
    for row in table.to_dict("records"):
        record = records[row["trial_id"]]
        assert row["status"] == record["status"]
        assert row["best_val_accuracy"] == pytest.approx(record["score"])
        for name, value in record["hyperparameters"]["values"].items():
            assert row[name] == (pytest.approx(value) if isinstance(value, float) else value), name
    assert list(table["best_val_accuracy"]) == sorted(table["best_val_accuracy"], reverse=True)
    return table


def test_space_covers_depth_key_dim_residual_scale_lr_and_widths():
    hp = kt.HyperParameters()
    UltimusHyperModel().build(hp)
    space = {p.name: p for p in hp.space}
    assert set(space) == set(SPACE)
    assert (space["num_blocks"].min_value, space["num_blocks"].max_value) == (1, 8)
    assert list(space["key_dim"].values) == [4, 8, 16]
    assert isinstance(space["residual"], kt.engine.hyperparameters.Boolean)
    assert list(space["scale"].values) == ["pre", "post"]
    lr = space["max_lr"]
    assert (lr.min_value, lr.max_value, lr.sampling) == (3e-4, 1e-2, "log")
    assert isinstance(space["conv_widths"], kt.engine.hyperparameters.Fixed)
    assert space["conv_widths"].value == "32,256,48"

    hp = kt.HyperParameters()
    UltimusHyperModel(["4,8,8", "8,16,8"]).build(hp)
    assert list(hp.space[0].values) == ["4,8,8", "8,16,8"]


def test_build_uses_the_trial_values():
    hypermodel = UltimusHyperModel(["4,8,8"])
    hp = kt.HyperParameters()
    hypermodel.build(hp)
    hp.values.update(num_blocks=3, key_dim=4, residual=True, scale="post")
    model = hypermodel.build(hp)
    blocks = [layer for layer in model.layers if isinstance(layer, UltimusLayer)]
    assert [(b.key_dim, b.scale, b.residual) for b in blocks] == [(4, "post", True)] * 3
    assert [model.get_layer(f"conv{i}").filters for i in (1, 2, 3)] == [4, 8, 8]
    reference = build_model(num_blocks=3, key_dim=4, scale="post", residual=True, conv_widths=(4, 8, 8))
    assert model.count_params() == reference.count_params()


def test_validation_is_a_seeded_split_of_the_training_set(fake_cifar_tarball):
    args = tune.parse_args(["--data", str(fake_cifar_tarball), "--val-fraction", "0.2", *TINY])
    (x_fit, _), (x_val, y_val), (x_test, _) = tune.search_data(args)
    (x_train, y_train), _ = load_local(fake_cifar_tarball)
    rows = {img.tobytes(): label for img, label in zip(x_train, y_train)}
    assert len(x_val) == 20 and len(x_fit) == 80
    assert all(rows[img.tobytes()] == label for img, label in zip(x_val, y_val))
    val = {img.tobytes() for img in x_val}
    assert not val & {img.tobytes() for img in x_fit}
    assert not val & {img.tobytes() for img in x_test}
    again = tune.search_data(args)[1][0]
    args.seed = 1
    other = tune.search_data(args)[1][0]
    np.testing.assert_array_equal(again, x_val)
    assert not np.array_equal(other, x_val)


def test_best_json_is_a_train_config_that_trains(fake_cifar_tarball, tmp_path):
    values = {"num_blocks": 2, "key_dim": 16, "residual": True, "scale": "post", "max_lr": 0.002,
              "conv_widths": "4,8,8", "tuner/epochs": 3}
    path = tmp_path / "best.json"
    path.write_text(json.dumps(tune.best_config(values, batch_size=16)))
    args = vars(train.parse_args(["--config", str(path)]))
    expected = {"num_blocks": 2, "key_dim": 16, "residual": True, "scale": "post", "max_lr": 0.002,
                "conv_widths": [4, 8, 8], "batch_size": 16}
    assert {k: args[k] for k in expected} == expected
    assert args["epochs"] == 24  # the search's budget is not carried over
    run = tmp_path / "run"
    assert train.main(["--config", str(path), "--data", str(fake_cifar_tarball), "--epochs", "1",
                       "--out", str(run)]) == 0
    config = json.loads((run / "run.json").read_text())["config"]
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize("argv", [
    ["--epochs", "0"], ["--val-fraction", "1"], ["--conv-widths", "4,x"], ["--algorithm", "grid"],
    ["--max-trials", "0"], ["--limit-train", "1"], ["--batch-size", "0"],
])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        tune.parse_args(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("python tuner/tune.py: error:")


def test_bad_data_env_and_settings_exit_2_with_one_line(fake_cifar_tarball, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"

    def error(argv):
        assert tune.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
        return err

    assert "no such file" in error(["--data", str(tmp_path / "none.tar.gz"), "--out", str(out)])
    assert "2 batches" in error(["--data", str(fake_cifar_tarball), "--out", str(out)])  # batch 512 > 90 images
    out.mkdir()
    (out / "search.json").write_text(json.dumps({"algorithm": "hyperband", "epochs": 9}))
    assert "--epochs 9, not 4" in error(["--data", str(fake_cifar_tarball), "--out", str(out), *TINY])
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    assert "KERASTUNER_ORACLE_PORT" in error(["--data", str(fake_cifar_tarball), "--out", str(out), *TINY])
    assert not (out / "oracle.json").exists()


def test_clis_have_help_as_script_and_module():
    for argv in (TUNE, [sys.executable, "-m", "tuner.tune"], LAUNCH):
        done = subprocess.run([*argv, "--help"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: python tuner/")


def test_bayesian_without_scikit_learn_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(tune, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as e:
        tune.parse_args(["--algorithm", "bayesian"])
    assert e.value.code == 2 and "pip install scikit-learn" in capsys.readouterr().err


@pytest.mark.slow
def test_bayesian_search_completes(fake_cifar_tarball, tmp_path):
    pytest.importorskip("sklearn", reason="--algorithm bayesian needs scikit-learn")
    out = tmp_path / "s"
    argv = ["--data", str(fake_cifar_tarball), "--out", str(out), "--algorithm", "bayesian",
            "--max-trials", "3", "--epochs", "1", *TINY]
    assert tune.main(argv) == 0
    assert json.loads((out / "search.json").read_text())["command"] == shlex.join(["python", "tuner/tune.py", *argv])
    records = oracle_records(out)
    assert len(records) == 3 and {r["status"] for r in records.values()} == {"COMPLETED"}
    assert_leaderboard_matches_oracle(out)


@pytest.mark.slow
def test_hyperband_search_resumes_after_a_kill_during_a_trial(fake_cifar_tarball, tmp_path):
    out = tmp_path / "hb"
    # Hyperband with max_epochs 3 (factor 3) starts with three 1-epoch trials, then
    # continues the best to epoch 3; --max-trials stops it there.
    flags = ["--data", str(fake_cifar_tarball), "--out", str(out), "--epochs", "3", "--max-trials", "4", *TINY]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([*TUNE, *flags], cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 150
        while not (out / "trial_1" / "log.csv").exists():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "second trial never started"
            time.sleep(0.05)
        first.kill()
        first.wait()
    records = oracle_records(out)
    assert (records["0"]["status"], records["1"]["status"]) == ("COMPLETED", "RUNNING")
    kept = {p.name: p.read_bytes() for p in (out / "trial_0").iterdir()}

    done = subprocess.run([*TUNE, *flags], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Reloading Tuner" in done.stdout
    assert json.loads((out / "search.json").read_text())["command"] == shlex.join(["python", "tuner/tune.py", *flags])
    assert {p.name: p.read_bytes() for p in (out / "trial_0").iterdir()} == kept
    records = oracle_records(out)
    assert len(records) == 4 and {r["status"] for r in records.values()} == {"COMPLETED"}
    table = assert_leaderboard_matches_oracle(out)
    for row in table.to_dict("records"):
        rows = len(pd.read_csv(out / f"trial_{row['trial_id']}" / "log.csv"))
        assert rows == row["epochs_run"] == row["tuner/epochs"] - row["tuner/initial_epoch"]
    assert table["tuner/initial_epoch"].max() == 1  # a continuation trial ran

    # The objective is accuracy on the held-out training split; the test set is reported apart.
    best = json.loads((out / "best.json").read_text())
    result = json.loads((out / "result.json").read_text())
    model = build_model(**recipe.model_kwargs(best))
    model.load_weights(out / f"trial_{result['best_trial']}" / "checkpoint.weights.h5")
    _, val, test = tune.search_data(tune.parse_args(flags))

    def accuracy(x, y):
        return np.mean(np.argmax(model.predict(x.astype("float32"), verbose=0), axis=-1) == y)

    assert accuracy(*val) == pytest.approx(result["val_accuracy"]) == pytest.approx(table["best_val_accuracy"][0])
    assert accuracy(*test) == pytest.approx(result["test_accuracy"])
    assert result["test_images"] == len(test[1]) == 20

    assert tune.main(flags) == 0  # re-running a finished search only rewrites its results
    assert oracle_records(out) == records
    assert tune.main([*flags[:4], "--algorithm", "random", "--max-trials", "1", "--epochs", "1", *TINY,
                      "--fresh"]) == 0
    assert list(oracle_records(out)) == ["0"]
    assert len(pd.read_csv(out / "leaderboard.csv")) == 1


@pytest.mark.slow
def test_launcher_runs_each_trial_once_over_two_workers(fake_cifar_tarball, tmp_path):
    out = tmp_path / "dist"
    argv = [*LAUNCH, "--workers", "2", "--data", str(fake_cifar_tarball), "--out", str(out),
            "--algorithm", "random", "--max-trials", "4", "--epochs", "2", *TINY]
    done = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("chief", "tuner0", "tuner1"):  # each exited by itself
        assert f"{name} exited with code 0" in done.stdout
    assert "stopping" not in done.stdout

    records = oracle_records(out)
    assert len(records) == 4 and {r["status"] for r in records.values()} == {"COMPLETED"}
    oracle = json.loads((out / "oracle.json").read_text())
    assert sorted(oracle["end_order"]) == sorted(records)  # each trial ended once
    assert set(oracle["run_times"].values()) == {1}
    assert oracle["ongoing_trials"] == {}

    # Each trial was trained once, by one worker; the chief trains none.
    runs = {}
    for name in ("chief", "tuner0", "tuner1"):
        for line in (out / "logs" / f"{name}.log").read_text().splitlines():
            if line.startswith(f"{name}: trial trial_"):
                runs.setdefault(line.split()[2].removeprefix("trial_"), []).append(name)
    assert sorted(runs) == sorted(records)
    assert all(len(names) == 1 for names in runs.values())
    assert {names[0] for names in runs.values()} == {"tuner0", "tuner1"}

    table = assert_leaderboard_matches_oracle(out)
    assert dict(zip(table["trial_id"], table["tuner_id"])) == {t: names[0] for t, names in runs.items()}
    assert (out / "best.json").exists() and (out / "result.json").exists()

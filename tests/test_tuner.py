"""Tests for keras_ultimus/tuner/: the search space, the parameter budget, trial schedules, the CLIs, the launcher."""

import errno
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest

from keras_ultimus import predict
from keras_ultimus.datasets.cifar10 import load_local
from keras_ultimus.errors import UserError
from keras_ultimus.models.layers import UltimusLayer
from keras_ultimus.models.ultimus import build_model, trainable_params
from keras_ultimus.training.run_config import default_config
from keras_ultimus.training.schedules import OneCycle
from keras_ultimus.tuner import leaderboard, options, search, tune
from keras_ultimus.tuner.hypermodel import (
    BUDGET_KEYS,
    UltimusHyperModel,
    budget_reason,
    declare_axis,
    declare_space,
    searched_values,
    trial_config,
)

REPO = Path(__file__).resolve().parents[1]
TUNE = [sys.executable, "-m", "keras_ultimus.tuner.tune"]
LAUNCH = [sys.executable, "-m", "keras_ultimus.tuner.launch"]
# 90 fit / 10 val images of the fake data, batch 16: 6 steps per epoch. A budget of 20,000 parameters
# trains only small stems, and skips most of the space (about 20 draws per trained one).
TINY = ["--batch-size", "16", "--max-params", "20000", "--pipeline", "numpy"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
REFERENCE = {
    "num_blocks": 4,
    "key_dim": 8,
    "scale": "pre",
    "residual": False,
    "max_lr": 0.003,
    "conv_widths": [32, 256, 48],
    "downsample": ["none", "none"],
}


def oracle_records(out: Path) -> dict[str, dict]:
    """Every trial.json the oracle wrote, by trial id."""
    return {
        r["trial_id"]: r
        for r in (json.loads(p.read_text()) for p in out.glob("trial_*/trial.json"))
    }


def read_leaderboard(out: Path) -> pd.DataFrame:
    return pd.read_csv(
        out / "leaderboard.csv",
        dtype={"trial_id": str, "tuner/trial_id": str},
        keep_default_na=False,
        na_values=[""],
    )


def assert_leaderboard_matches_oracle(out: Path) -> pd.DataFrame:
    """One row per oracle trial with its status, score and configuration; skipped configurations after them."""
    table = read_leaderboard(out)
    trained = table[table["status"] != search.SKIPPED]
    records = oracle_records(out)
    assert sorted(trained["trial_id"]) == sorted(records)
    for row in trained.to_dict("records"):
        record = records[row["trial_id"]]
        assert row["status"] == record["status"]
        assert row["best_val_accuracy"] == pytest.approx(record["score"])
        config = trial_config(record["hyperparameters"]["values"])
        assert row["conv_widths"] == ",".join(map(str, config["conv_widths"]))
        assert row["downsample"] == ",".join(config["downsample"]) or pd.isna(row["downsample"])
        assert (row["num_blocks"], row["key_dim"], row["max_lr"]) == (
            config["num_blocks"],
            config["key_dim"],
            pytest.approx(config["max_lr"]),
        )
    scores = list(trained["best_val_accuracy"])
    assert scores == sorted(scores, reverse=True)
    return table


def test_space_covers_depth_key_dim_scale_residual_lr_and_the_stem():
    hp = kt.HyperParameters()
    declare_space(hp)
    space = {p.name: p for p in hp.space}
    assert (space["num_blocks"].min_value, space["num_blocks"].max_value) == (1, 8)
    assert list(space["key_dim"].values) == [4, 8, 16]
    assert list(space["scale"].values) == ["pre", "post"]
    assert isinstance(space["residual"], kt.engine.hyperparameters.Boolean)
    lr = space["max_lr"]
    assert (lr.min_value, lr.max_value, lr.sampling) == (3e-4, 1e-2, "log")
    assert (space["num_convs"].min_value, space["num_convs"].max_value) == (2, 6)
    assert {f"conv{i}_width" for i in range(1, 7)} | {f"down{i}" for i in range(1, 6)} <= set(space)
    assert list(space["down3"].values) == ["none", "pool", "stride"]
    # The defaults are the reference model and recipe; conv 4-6 are inactive with 3 convs.
    assert searched_values(hp.values) == REFERENCE
    assert trial_config(hp.values) == {
        **default_config(),
        **REFERENCE,
    }  # the reference run config, exactly
    assert "conv4_width" not in hp.values and not hp.is_active(space["conv4_width"])


def test_the_wide_space_defaults_to_the_reference_run_config():
    hp = kt.HyperParameters()
    declare_space(hp, "wide")
    space = {p.name: p for p in hp.space}
    assert list(space["stem"].values) == ["plain", "resnet"] and space["whiten"].default is False
    assert trial_config(hp.values) == {**default_config(), **REFERENCE}


def test_a_search_axis_outside_its_settings_range_or_type_is_refused():
    with pytest.raises(UserError, match="label_smoothing=1.5: must be in"):
        declare_axis(kt.HyperParameters(), "label_smoothing", [0.0, 1.5])
    with pytest.raises(UserError, match="'key_dim': expected int"):
        declare_axis(kt.HyperParameters(), "key_dim", [4, 8.5])


def test_search_flags_are_generated_from_the_typed_search_options():
    import dataclasses

    args = vars(options.parse_args([]))
    assert {k: args[k] for k in options.SEARCH_FIELDS} == dataclasses.asdict(
        options.SearchOptions()
    )
    assert options.search_options(options.parse_args(["--epochs", "9"])).epochs == 9
    with pytest.raises(UserError, match="val_fraction=1.0: must be below 1"):
        options.SearchOptions(val_fraction=1.0)


def test_build_uses_the_trial_values():
    hp = kt.HyperParameters()
    declare_space(hp)
    hp.values.update(
        num_blocks=3,
        key_dim=4,
        residual=True,
        scale="post",
        num_convs=4,
        conv1_width=16,
        conv2_width=32,
        conv3_width=48,
        conv4_width=16,
        down1="pool",
        down2="none",
        down3="stride",
    )
    model = UltimusHyperModel().build(hp)
    blocks = [layer for layer in model.layers if isinstance(layer, UltimusLayer)]
    assert [(b.key_dim, b.scale, b.residual) for b in blocks] == [(4, "post", True)] * 3
    assert [model.get_layer(f"conv{i}").filters for i in (1, 2, 3, 4)] == [16, 32, 48, 16]
    assert model.get_layer("pool1") and model.get_layer("conv4").strides == (2, 2)
    config = trial_config(hp.values)
    assert config["downsample"] == ["pool", "none", "stride"]
    kwargs = {
        k: config[k]
        for k in ("num_blocks", "key_dim", "scale", "residual", "conv_widths", "downsample")
    }
    assert model.count_params() == build_model(**kwargs).count_params()


def test_budget_reason_names_what_cannot_be_trained():
    values = {
        "num_blocks": 1,
        "key_dim": 4,
        "scale": "pre",
        "residual": False,
        "max_lr": 1e-3,
        "num_convs": 2,
        "conv1_width": 8,
        "conv2_width": 8,
        "down1": "none",
    }
    params = trainable_params(num_blocks=1, key_dim=4, conv_widths=(8, 8))
    assert budget_reason(values, params) is None
    assert (
        budget_reason(values, params - 1)
        == f"over budget: {params:,} trainable parameters > {params - 1:,}"
    )
    six = {
        **values,
        "num_convs": 6,
        **{f"conv{i}_width": 8 for i in range(1, 7)},
        **{f"down{i}": "pool" for i in range(1, 6)},
    }
    assert budget_reason(six, 10**9).startswith("invalid: conv")


@pytest.mark.parametrize("oracle_class", [search.RandomSearchOracle, search.HyperbandOracle])
def test_oracle_draws_only_trainable_values_and_records_the_rest(oracle_class, tmp_path):
    hp = kt.HyperParameters()
    declare_space(hp)
    extra = {"max_epochs": 3} if oracle_class is search.HyperbandOracle else {"max_trials": 100}
    oracle = oracle_class(
        objective="val_accuracy", seed=1, hyperparameters=hp, max_params=60_000, **extra
    )
    oracle._set_project_dir(str(tmp_path), "p")
    drawn = [oracle._random_values() for _ in range(15)]
    assert all(budget_reason(v, 60_000) is None for v in drawn)
    reasons = [s["reason"] for s in oracle.skipped]
    assert any(r.startswith("over budget") for r in reasons) and any(
        r.startswith("invalid") for r in reasons
    )
    assert all(budget_reason(s["values"], 60_000) == s["reason"] for s in oracle.skipped)
    # Skipped values survive a reload of the oracle's state.
    state = json.loads(json.dumps(oracle.get_state()))
    again = oracle_class(
        objective="val_accuracy", seed=1, hyperparameters=hp, max_params=60_000, **extra
    )
    again.set_state(state)
    assert again.skipped == oracle.skipped


@pytest.mark.slow
def test_hyperband_promotion_trains_from_scratch_with_a_full_schedule(
    fake_cifar_tarball, tmp_path, capsys, monkeypatch
):
    """Hyperband (max 3 epochs) runs three 1-epoch trials, then promotes the best to 3 epochs (initial_epoch 1)."""
    out = tmp_path / "hb"
    flags = [
        "--data",
        str(fake_cifar_tarball),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--max-trials",
        "4",
        "--limit-test",
        "12",
        *TINY,
    ]
    backend = keras.backend.backend()
    monkeypatch.setenv("KERAS_BACKEND", backend)
    assert tune.main(flags) == 0
    # The closing hint trains on the backend the search ran on.
    assert (
        f"  KERAS_BACKEND={backend} python -m keras_ultimus.train --config {out / 'best.json'}\n"
        in capsys.readouterr().out
    )
    records = oracle_records(out)
    assert len(records) == 4 and {r["status"] for r in records.values()} == {"COMPLETED"}
    table = assert_leaderboard_matches_oracle(out)
    promoted = table[table["tuner/initial_epoch"] == 1]
    assert len(promoted) == 1
    row = promoted.iloc[0]
    assert row["tuner/epochs"] == 3 and row["epochs_run"] == 3
    log = pd.read_csv(out / f"trial_{row['trial_id']}" / "log.csv")
    fit = json.loads((out / f"trial_{row['trial_id']}" / "fit.json").read_text())
    steps_per_epoch = 6
    assert list(log["epoch"]) == [0, 1, 2]
    assert fit["schedule_steps"] == 3 * steps_per_epoch
    # The logged LR after each epoch is the one-cycle of the whole 3 epochs, ending at its floor.
    schedule = OneCycle(float(row["max_lr"]), 3 * steps_per_epoch)
    expected = [float(keras.ops.convert_to_numpy(schedule(e * steps_per_epoch))) for e in (1, 2, 3)]
    np.testing.assert_allclose(log["learning_rate"], expected, rtol=1e-5)
    assert expected[0] > expected[-1] * 100
    # Configurations over the 20,000-parameter budget were listed with their reason, never tried.
    skipped = table[table["status"] == search.SKIPPED]
    assert len(skipped) > 0 and skipped["reason"].str.match(r"^(over budget|invalid): ").all()
    trained = table[table["status"] == "COMPLETED"]
    assert (trained["trainable_params"] <= 20_000).all()
    result = json.loads((out / "result.json").read_text())
    assert (
        result["configurations_skipped"] == len(skipped) and result["test_images"] == 12
    )  # --limit-test
    # Each trial keeps its model, so predict and export take a trial folder as they take a run folder.
    assert all((out / f"trial_{trial}" / "model.keras").is_file() for trial in trained["trial_id"])
    images = out / "images.npy"
    np.save(images, np.zeros((2, 32, 32, 3), np.uint8))
    assert predict.main([str(out / f"trial_{row['trial_id']}"), str(images)]) == 0
    best = json.loads((out / "best.json").read_text())
    assert set(best) == set(default_config()) - set(
        BUDGET_KEYS
    )  # a whole run config but the search's budget
    assert (
        "pipeline" not in best
    )  # the search's resolved pipeline ("tfdata" here) would fail where TF is missing
    assert best["batch_size"] == json.loads((out / "search.json").read_text())["batch_size"]


def test_validation_is_a_seeded_split_of_the_training_set(fake_cifar_tarball):
    (x_fit, _), (x_val, y_val), (x_test, _) = search.search_data(
        str(fake_cifar_tarball), None, 0.2, 0, 16
    )
    (x_train, y_train), _ = load_local(fake_cifar_tarball)
    rows = {img.tobytes(): label for img, label in zip(x_train, y_train)}
    assert len(x_val) == 20 and len(x_fit) == 80
    assert all(rows[img.tobytes()] == label for img, label in zip(x_val, y_val))
    val = {img.tobytes() for img in x_val}
    assert not val & {img.tobytes() for img in x_fit}
    assert not val & {img.tobytes() for img in x_test}
    np.testing.assert_array_equal(
        search.search_data(str(fake_cifar_tarball), None, 0.2, 0, 16)[1][0], x_val
    )
    assert not np.array_equal(
        search.search_data(str(fake_cifar_tarball), None, 0.2, 1, 16)[1][0], x_val
    )


def test_best_json_is_a_train_config_that_trains(fake_cifar_tarball, tmp_path):
    from keras_ultimus import train

    values = {
        "num_blocks": 2,
        "key_dim": 16,
        "residual": True,
        "scale": "post",
        "max_lr": 0.002,
        "num_convs": 3,
        "conv1_width": 8,
        "conv2_width": 16,
        "conv3_width": 8,
        "down1": "pool",
        "down2": "stride",
        "tuner/epochs": 3,
    }
    path = tmp_path / "best.json"
    path.write_text(json.dumps(leaderboard.best_config(values, {"batch_size": 16})))
    run = tmp_path / "run"
    assert (
        train.main(
            [
                "--config",
                str(path),
                "--data",
                str(fake_cifar_tarball),
                "--epochs",
                "1",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    config = json.loads((run / "run.json").read_text())["config"]
    expected = {**searched_values(values), "batch_size": 16}
    assert {k: config[k] for k in expected} == expected
    assert config["epochs"] == 1  # the search's budget is not carried over
    model = keras.saving.load_model(run / "model.keras")
    assert model.get_layer("pool1") and model.get_layer("conv3").strides == (2, 2)


@pytest.mark.parametrize(
    "argv",
    [
        ["--epochs", "0"],
        ["--val-fraction", "1"],
        ["--algorithm", "grid"],
        ["--max-trials", "0"],
        ["--limit-train", "1"],
        ["--limit-test", "0"],
        ["--batch-size", "0"],
        ["--max-params", "0"],
        ["--precision", "fp8"],
        ["--jit", "maybe"],
        ["--pipeline", "grain"],
        ["--distribute", "ring"],
        ["--devices", "0"],
        ["--epochs", "x"],
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        options.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("error: ")
        and err[0].endswith(f"(see {options.PROG} --help)")
    )


def test_bad_inputs_exit_2_with_one_line(fake_cifar_tarball, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"

    def error(argv):
        assert tune.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err, err
        return err

    data = ["--data", str(fake_cifar_tarball)]
    assert "none.tar.gz" in error(
        ["--data", str(tmp_path / "none.tar.gz"), "--out", str(out), *TINY]
    )
    assert "2 batches" in error(
        [*data, "--out", str(out), "--pipeline", "numpy"]
    )  # batch 512 > 90 images
    (tmp_path / "file").write_text("x")
    assert "is a file" in error([*data, "--out", str(tmp_path / "file"), *TINY])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    assert "not a search folder" in error(
        [*data, "--out", str(tmp_path / "other"), *TINY, "--fresh"]
    )
    assert (tmp_path / "other" / "notes.txt").exists()
    out.mkdir()
    (out / "search.json").write_text(json.dumps({"algorithm": "hyperband", "epochs": 9}))
    assert "--epochs 9, not 4" in error([*data, "--out", str(out), *TINY])
    (out / "search.json").write_text("{")
    assert "unreadable" in error([*data, "--out", str(out), *TINY])
    (out / "search.json").unlink()
    if keras.backend.backend() != "jax":
        assert "data-parallel" in error(
            [*data, "--out", str(out), *TINY, "--distribute", "data-parallel"]
        )
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    assert "KERASTUNER_ORACLE_PORT" in error([*data, "--out", str(out), *TINY])
    assert not (out / "oracle.json").exists()


@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import:RuntimeWarning")
@pytest.mark.parametrize("module", [TUNE[-1], LAUNCH[-1]], ids=["tune", "launch"])
def test_clis_answer_help_as_modules(module, capsys, monkeypatch):
    # In process, as `python -m` runs them (runpy, run_name "__main__"): a subprocess would only add an import.
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m keras_ultimus.tuner.")
    assert not (REPO / "tuner").exists()  # the old top-level package is gone


def test_bayesian_without_scikit_learn_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(options, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as e:
        options.parse_args(["--algorithm", "bayesian"])
    assert e.value.code == 2 and "pip install scikit-learn" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_one_trial_runs_where_tensorflow_is_missing(backend, fake_cifar_tarball, tmp_path):
    out = tmp_path / "s"
    env = {
        **ENV,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "no_tensorflow"), str(REPO)]),
    }
    done = subprocess.run(
        [
            *TUNE,
            "--data",
            str(fake_cifar_tarball),
            "--out",
            str(out),
            "--algorithm",
            "random",
            "--max-trials",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--max-params",
            "20000",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (trial,) = oracle_records(out).values()
    assert trial["status"] == "COMPLETED"
    fit = json.loads((out / f"trial_{trial['trial_id']}" / "fit.json").read_text())
    assert fit["pipeline"] == "numpy" and fit["epochs_run"] == 1
    assert json.loads((out / "result.json").read_text())["test_images"] == 20


def start_launcher(tmp_path: Path, flags: list[str]) -> tuple[subprocess.Popen, dict[str, int]]:
    """Start the launcher and read the children's pids from its first lines."""
    launcher = subprocess.Popen(
        [*LAUNCH, *flags],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids = {}
    while len(pids) < 3:
        line = launcher.stdout.readline()
        assert line, "the launcher ended before starting its children"
        if ": pid " in line:
            name, pid = line.split(": pid ")
            pids[name] = int(pid)
    return launcher, pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_child(fake_cifar_tarball, tmp_path):
    flags = [
        "--workers",
        "2",
        "--data",
        str(fake_cifar_tarball),
        "--out",
        str(tmp_path / "s"),
        "--epochs",
        "50",
        "--algorithm",
        "random",
        "--max-trials",
        "50",
        *TINY,
    ]
    launcher, pids = start_launcher(tmp_path, flags)
    assert all(alive(pid) for pid in pids.values())
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(60) == 143
    assert "SIGTERM: stopping the search" in launcher.stdout.read()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [name for name, pid in pids.items() if alive(pid)]


@pytest.mark.slow
def test_a_child_that_dies_stops_the_others(fake_cifar_tarball, tmp_path):
    # Every child fails on the missing data; the launcher reports the first and stops the rest.
    flags = [
        "--workers",
        "2",
        "--data",
        str(tmp_path / "missing.tar.gz"),
        "--out",
        str(tmp_path / "s"),
        *TINY,
    ]
    launcher, pids = start_launcher(tmp_path, flags)
    assert launcher.wait(120) == 2
    assert "missing.tar.gz" in launcher.stdout.read()
    assert not [name for name, pid in pids.items() if alive(pid)]


def test_a_full_disk_in_a_trial_ends_the_search_in_one_line_with_exit_3(
    fake_cifar_tarball, tmp_path, capsys, monkeypatch
):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a checkpoint or log write would

    monkeypatch.setattr(UltimusHyperModel, "fit", full)
    out = tmp_path / "s"
    argv = [
        "--data",
        str(fake_cifar_tarball),
        "--out",
        str(out),
        "--algorithm",
        "random",
        "--max-trials",
        "2",
        "--epochs",
        "1",
        *TINY,
    ]
    assert tune.main(argv) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert f"{out}/trial_0: write failed (No space left on device)" in err
    assert not (out / ".lock").exists()


def test_a_trial_that_killed_its_workers_twice_fails_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")
    for _ in range(search.MAX_ATTEMPTS):
        search.record_attempt(tmp_path)
    with pytest.raises(
        kt.errors.FailedTrialError,
        match=rf"2 processes died running this trial \(last: tuner1, "
        rf"pid {os.getpid()}\); not started again",
    ):
        search.record_attempt(tmp_path)


@pytest.mark.slow
def test_launcher_runs_each_trial_once_over_two_workers_and_restarts_one_killed_mid_trial(
    fake_cifar_tarball, tmp_path
):
    """One search (each costs three processes): tuner0 is killed in its first trial, restarted, and finishes it."""
    out = tmp_path / "dist"
    flags = [
        "--workers",
        "2",
        "--data",
        str(fake_cifar_tarball),
        "--out",
        str(out),
        "--algorithm",
        "random",
        "--max-trials",
        "3",
        "--epochs",
        "2",
        *TINY,
    ]
    launcher, pids = start_launcher(tmp_path, flags)
    log = out / "logs" / "tuner0.log"
    deadline = time.monotonic() + 120
    while (
        "tuner0: trial trial_" not in (log.read_text() if log.exists() else "")
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    killed = log.read_text().split("tuner0: trial trial_")[1].split()[0]
    os.kill(pids["tuner0"], signal.SIGKILL)
    assert launcher.wait(300) == 0
    stdout = launcher.stdout.read()
    assert "tuner0 was killed by SIGKILL; starting it again (1 of 3)" in stdout
    for name in ("chief", "tuner0", "tuner1"):  # each exited by itself in the end
        assert f"{name} exited with code 0" in stdout
    assert "stopping" not in stdout

    records = oracle_records(out)
    assert len(records) == 3 and {r["status"] for r in records.values()} == {"COMPLETED"}
    oracle = json.loads((out / "oracle.json").read_text())
    assert sorted(oracle["end_order"]) == sorted(records)  # each trial ended once
    assert oracle["ongoing_trials"] == {}
    attempts = json.loads((out / f"trial_{killed}" / search.ATTEMPTS_NAME).read_text())
    assert [a["tuner_id"] for a in attempts] == ["tuner0", "tuner0"]
    assert attempts[0]["pid"] == pids["tuner0"]

    # Each trial was trained by one worker (the killed one by tuner0, twice); the chief trains none.
    runs = {}
    for name in ("chief", "tuner0", "tuner1"):
        for line in (out / "logs" / f"{name}.log").read_text().splitlines():
            if line.startswith(f"{name}: trial trial_"):
                runs.setdefault(line.split()[2].removeprefix("trial_"), []).append(name)
    assert sorted(runs) == sorted(records)
    assert set(runs.pop(killed)) == {"tuner0"}
    assert all(len(names) == 1 for names in runs.values())
    assert {names[0] for names in runs.values()} <= {"tuner0", "tuner1"}

    table = assert_leaderboard_matches_oracle(out)
    trained = table[table["status"] == "COMPLETED"]
    assert dict(zip(trained["trial_id"], trained["tuner_id"])) == {
        **{t: names[0] for t, names in runs.items()},
        killed: "tuner0",
    }
    assert (out / "best.json").exists() and (out / "result.json").exists()


def test_the_initial_space_is_declared_without_building_models(tmp_path, monkeypatch):
    hypermodel = UltimusHyperModel()
    monkeypatch.setattr(hypermodel, "build", lambda hp: pytest.fail("built a model"))
    tuner = search.make_tuner("random", tmp_path / "s", hypermodel, epochs=1)
    tuner._populate_initial_space()
    names = {p.name for p in tuner.oracle.get_space().space}
    assert {"num_convs", "conv6_width", "down5", "max_lr"} <= names

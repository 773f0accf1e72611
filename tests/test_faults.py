"""Faults a user meets: two commands on one run folder, a lock left by a dead process, an edited log, a full disk."""

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from keras_ultimus import train
from keras_ultimus.errors import UserError
from keras_ultimus.runs import folder as run_folder
from tests.helpers import assert_same_log

TINY = ["--conv-widths", "4,8,8", "--batch-size", "32"]
# The commands' own quiet logging, whatever TF_CPP_MIN_LOG_LEVEL an earlier in-process test left behind.
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_held_folder_lock_refuses_a_second_holder_naming_the_pid(tmp_path):
    with run_folder.FolderLock(tmp_path / "run"):
        with pytest.raises(UserError, match=rf"in use by another process \(pid {os.getpid()}\)"):
            with run_folder.FolderLock(tmp_path / "run"):
                pass
        assert (tmp_path / "run" / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / "run").exists()  # made for the lock alone, and left empty: removed


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from keras_ultimus.runs.folder import FolderLock\n"
                f"lock = FolderLock(Path({str(folder)!r})).__enter__(); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        run_folder.FolderLock(folder).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / ".lock").read_text() == str(
        holder.pid
    )  # the dead owner's lock file is still there
    with run_folder.FolderLock(folder):
        assert (folder / ".lock").read_text() == str(os.getpid())


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_train_on_a_run_folder_in_use_is_refused_in_one_line(
    tmp_path, capsys, fake_cifar_tarball, resume
):
    # The holder is this process, through another open file: flock refuses it as it would another process
    # (test_a_lock_left_by_a_killed_process_is_taken_over holds it from a child).
    run = fake_unfinished_run(tmp_path / "run", [0], data=str(fake_cifar_tarball))
    args = (
        ["--resume", str(run)]
        if resume
        else ["--data", str(fake_cifar_tarball), "--out", str(run), *TINY]
    )
    with run_folder.FolderLock(run):
        assert train.main(args) == 2
    assert f"in use by another process (pid {os.getpid()})" in one_error_line(
        capsys.readouterr().err
    )
    assert sorted(p.name for p in run.iterdir()) == ["log.csv", "run.json"]  # untouched


@pytest.mark.parametrize("command", ["tune", "launch"])
def test_a_search_folder_in_use_is_refused_naming_the_pid(
    tmp_path, capsys, fake_cifar_tarball, command
):
    from keras_ultimus.tuner import launch, tune

    out = tmp_path / "search"
    args = [
        "--data",
        str(fake_cifar_tarball),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--val-fraction",
        "0.2",
    ]
    with run_folder.FolderLock(out):
        assert {"tune": tune, "launch": launch}[command].main(args) == 2
        assert f"in use by another process (pid {os.getpid()})" in one_error_line(
            capsys.readouterr().err
        )
    assert not out.exists()


@pytest.mark.parametrize("kind", ["savedmodel", "onnx"])
def test_an_export_target_in_use_is_refused_naming_the_pid(tmp_path, residual_model, kind):
    from keras_ultimus.serving import export as serving_export

    if kind == "onnx":
        pytest.importorskip("tf2onnx")
    target = tmp_path / ("model.onnx" if kind == "onnx" else "ultimus")
    holder = (
        run_folder.FolderLock(tmp_path, name=".model.onnx.lock")
        if kind == "onnx"
        else run_folder.FolderLock(target)
    )
    with (
        holder,
        pytest.raises(UserError, match=rf"in use by another process \(pid {os.getpid()}\)"),
    ):
        (serving_export.export_onnx if kind == "onnx" else serving_export.export_saved_model)(
            residual_model, target
        )
    assert not target.exists()


def fake_unfinished_run(path, log_epochs, **config):
    path.mkdir()
    defaults = {k: v for k, v in vars(train.parse_args([])).items() if k not in train.NOT_CONFIG}
    (path / "run.json").write_text(
        json.dumps({"config": {**defaults, "conv_widths": [4, 8, 8], **config}})
    )
    pd.DataFrame({"epoch": log_epochs, "accuracy": 0.1, "val_accuracy": 0.1}).to_csv(
        path / "log.csv", index=False
    )
    return path


@pytest.mark.parametrize("epochs", [[0, 2], [0, 1, 1], [1]])
def test_resume_refuses_a_log_with_missing_or_duplicated_epochs(tmp_path, capsys, epochs):
    run = fake_unfinished_run(tmp_path / "run", epochs)
    assert train.main(["--resume", str(run)]) == 2
    assert "log.csv: epochs" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in run.iterdir()) == [
        "log.csv",
        "run.json",
    ]  # the lock is gone again


@pytest.mark.parametrize(
    "text", ["{not json", json.dumps({"config": {"seed": "zero"}}), json.dumps([1, 2])]
)
def test_resume_refuses_an_edited_run_json_naming_it(tmp_path, capsys, text):
    (tmp_path / "run.json").write_text(text)
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert "run.json" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_resume_refuses_a_damaged_backup_naming_it(tmp_path, capsys, fake_cifar_tarball, damage):
    import h5py
    import numpy as np

    run = fake_unfinished_run(tmp_path / "run", [0], data=str(fake_cifar_tarball), epochs=2)
    state = run / "backup" / "epoch-1"
    state.mkdir(parents=True)
    (state / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 0}))
    weights = state / "latest.weights.h5"
    if damage == "garbage":
        weights.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        with h5py.File(weights, "w") as f:
            f["weights"] = np.zeros(10_000)
        weights.write_bytes(weights.read_bytes()[:3000])
    assert train.main(["--resume", str(run)]) == 2
    assert f"{state}: unreadable backup" in one_error_line(capsys.readouterr().err)
    assert pd.read_csv(run / "log.csv")["epoch"].tolist() == [0]  # nothing was trained or trimmed


def file_size_limit(limit: int):
    """A preexec_fn that caps the size of any file the child writes (RLIMIT_FSIZE), as a full disk would."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_full_disk_ends_train_in_one_line_and_the_run_resumes_once_space_is_back(
    tmp_path, fake_cifar_tarball
):
    out, straight = tmp_path / "run", tmp_path / "straight"
    common = ["--data", str(fake_cifar_tarball), "--epochs", "3", "--deterministic", *TINY]
    full = subprocess.run(
        [sys.executable, "-m", "keras_ultimus.train", *common, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        preexec_fn=file_size_limit(40_000),
    )
    assert full.returncode == 3, full.stderr[-2000:]
    line = one_error_line(full.stderr)
    assert "write failed (File too large)" in line and f"--resume {out}" in line
    assert (
        not list(out.glob(".*partial*")) and not (out / "best.keras").exists()
    )  # no half-written checkpoint
    resumed = subprocess.run(
        [sys.executable, "-m", "keras_ultimus.train", "--resume", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    subprocess.run(
        [sys.executable, "-m", "keras_ultimus.train", *common, "--out", str(straight)],
        capture_output=True,
        timeout=300,
        check=True,
    )
    assert_same_log(out, straight)
    assert (out / "model.keras").is_file() and not (out / ".lock").exists()


def test_a_half_written_last_log_line_is_dropped_before_resume(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,accuracy\n0,0.1\n1,0.2\n2,0.")
    run_folder.drop_partial_last_line(log)
    assert log.read_text() == "epoch,accuracy\n0,0.1\n1,0.2\n"
    run_folder.check_log(log)


# The child of the kill loop: `train` with every write into the run folder paused half-way, so that
# random kills land inside writes. Each pause is marked in a side file, to count the kills that did.
SLOW_WRITES = """
import builtins, os, sys, time
import h5py
from keras_ultimus import train

run, marks, pause = sys.argv[1], open(sys.argv[2], "a"), float(sys.argv[3])

def mark(what, path):
    marks.write(f"{what} {path}\\n")
    marks.flush()

def paused(path):
    mark("begin", path)
    time.sleep(pause)
    mark("end", path)

class SlowFile:  # a log (opened to append) pauses in every write; any other file in its first two
    def __init__(self, file, path, appends):
        self._file, self._path, self._pauses = file, path, float("inf") if appends else 2
    def write(self, data):
        if self._pauses and len(data) > 1:
            self._pauses -= 1
            self._file.write(data[: len(data) // 2])
            self._file.flush()
            paused(self._path)
            return self._file.write(data[len(data) // 2:]) + len(data) // 2
        return self._file.write(data)
    def __getattr__(self, name):
        return getattr(self._file, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._file.__exit__(*exc)
    def __iter__(self):
        return iter(self._file)

real_open = builtins.open
def slow_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    writes = any(c in mode for c in "wax+") and isinstance(file, str | os.PathLike)
    return SlowFile(f, str(file), "a" in mode) if writes and str(file).startswith(run) else f
builtins.open = slow_open

real_close = h5py.File.close
def slow_close(self):
    if self.id.valid and self.mode == "r+" and run in self.filename:
        paused(self.filename)
    real_close(self)
h5py.File.close = slow_close

mark("ready", run)
sys.exit(train.main(sys.argv[4:]))
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_and_resume_equals_an_uninterrupted_run(
    tmp_path, fake_cifar_tarball
):
    """8 kills, 7 of them inside a write; every resume reads a moved copy of the data. Same log and weights.

    The writes are the run folder's own, whatever the backend; torch and JAX resume a killed run in
    tests/test_park_run.py, which CI runs on every backend.
    """
    import random
    import shutil

    import keras
    import numpy as np

    out, straight = tmp_path / "run", tmp_path / "straight"
    moved = str(shutil.copy(fake_cifar_tarball, tmp_path / "moved.tar.gz"))
    common = [
        "--data",
        str(fake_cifar_tarball),
        "--epochs",
        "5",
        "--deterministic",
        "--val-split",
        "0.25",
        *TINY,
    ]
    reference = subprocess.Popen(
        [sys.executable, "-m", "keras_ultimus.train", *common, "--out", str(straight)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    rng, kills, inside, finished = random.Random(0), 0, [], False
    order = rng.sample(range(1, 8), 7)
    for attempt in range(40):
        args = (
            ["--resume", str(out), "--data", moved]
            if (out / "run.json").exists()
            else [*common, "--out", str(out)]
        )
        marks = tmp_path / f"marks{attempt}.txt"
        child = subprocess.Popen(
            [sys.executable, "-c", SLOW_WRITES, str(out), str(marks), "0.15", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        if kills < 8:
            # The first 7 kills land inside the n-th write of a process, n = 1..7 in a random order (a lock,
            # run.json, the log row, best.keras, the backup's weights and epoch); the 8th a moment after one.
            writes = order[kills % 7]
            delay = rng.uniform(0.0, 0.1) if kills < 7 else rng.uniform(0.15, 0.5)
            while child.poll() is None and (
                not marks.exists() or marks.read_text().count("begin ") < writes
            ):
                time.sleep(0.01)
            time.sleep(delay)
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                child.wait()
                kills += 1
                last = marks.read_text().splitlines()[-1]
                if last.startswith("begin "):
                    inside.append(os.path.relpath(last.split(" ", 1)[1], out))
                continue
        assert child.wait(timeout=300) == 0, child.stderr.read()[-2000:]
        finished = True
        break
    assert finished and kills >= 8
    # Kills half-way through a write of each kind a resume reads: the backup's weights and epoch, the log, run.json.
    hit = {os.path.basename(p) for p in inside}
    assert {"latest.weights.h5", "training_metadata.json", "log.csv", ".run.json.tmp"} <= hit, (
        inside
    )
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-2000:]
    assert_same_log(out, straight)
    exact = os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"
    for name in ("model.keras", "best.keras"):
        got, expected = (keras.saving.load_model(p / name).get_weights() for p in (out, straight))
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=0 if exact else 1e-3, atol=0 if exact else 1e-4)
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["data"] == moved and len(info["segments_seconds"]) >= 2
    assert info["wall_seconds"] == pytest.approx(sum(info["segments_seconds"]), abs=0.2)
    assert not list(out.rglob("*partial*")) and not (out / "backup").exists()

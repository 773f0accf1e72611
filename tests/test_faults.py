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

from keras_ultimus import run_folder, train
from keras_ultimus.errors import UserError

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
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from keras_ultimus.run_folder import FolderLock\n"
        f"lock = FolderLock(Path({str(folder)!r})).__enter__(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        run_folder.FolderLock(folder).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / ".lock").read_text() == str(holder.pid)  # the dead owner's lock file is still there
    with run_folder.FolderLock(folder):
        assert (folder / ".lock").read_text() == str(os.getpid())


@pytest.mark.slow
def test_a_second_train_on_a_live_run_folder_is_refused_in_one_line(tmp_path, fake_cifar_tarball):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "keras_ultimus.train", "--data", str(fake_cifar_tarball),
                              "--out", str(out), "--epochs", "5000", *TINY],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.time() + 120
        while not (out / "log.csv").exists() and time.time() < deadline:
            time.sleep(0.1)
        for args in (["--data", str(fake_cifar_tarball), "--out", str(out), "--epochs", "5000", *TINY],
                     ["--resume", str(out)]):
            second = subprocess.run([sys.executable, "-m", "keras_ultimus.train", *args],
                                    capture_output=True, text=True, timeout=120, env=ENV)
            assert second.returncode == 2
            assert f"in use by another process (pid {first.pid})" in one_error_line(second.stderr)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def fake_unfinished_run(path, log_epochs):
    path.mkdir()
    config = {k: v for k, v in vars(train.parse_args([])).items() if k not in train.NOT_CONFIG}
    (path / "run.json").write_text(json.dumps({"config": {**config, "conv_widths": [4, 8, 8]}}))
    pd.DataFrame({"epoch": log_epochs, "accuracy": 0.1, "val_accuracy": 0.1}).to_csv(path / "log.csv", index=False)
    return path


@pytest.mark.parametrize("epochs", [[0, 2], [0, 1, 1], [1]])
def test_resume_refuses_a_log_with_missing_or_duplicated_epochs(tmp_path, capsys, epochs):
    run = fake_unfinished_run(tmp_path / "run", epochs)
    assert train.main(["--resume", str(run)]) == 2
    assert "log.csv: epochs" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in run.iterdir()) == ["log.csv", "run.json"]  # the lock is gone again


@pytest.mark.parametrize("text", ["{not json", json.dumps({"config": {"seed": "zero"}}), json.dumps([1, 2])])
def test_resume_refuses_an_edited_run_json_naming_it(tmp_path, capsys, text):
    (tmp_path / "run.json").write_text(text)
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert "run.json" in one_error_line(capsys.readouterr().err)


def file_size_limit(limit: int):
    """A preexec_fn that caps the size of any file the child writes (RLIMIT_FSIZE), as a full disk would."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_full_disk_ends_train_in_one_line_and_the_run_resumes_once_space_is_back(tmp_path, fake_cifar_tarball):
    out, straight = tmp_path / "run", tmp_path / "straight"
    common = ["--data", str(fake_cifar_tarball), "--epochs", "3", "--deterministic", *TINY]
    full = subprocess.run([sys.executable, "-m", "keras_ultimus.train", *common, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=ENV,
                          preexec_fn=file_size_limit(40_000))
    assert full.returncode == 3, full.stderr[-2000:]
    line = one_error_line(full.stderr)
    assert "write failed (File too large)" in line and f"--resume {out}" in line
    assert not list(out.glob(".*partial*")) and not (out / "best.keras").exists()  # no half-written checkpoint
    resumed = subprocess.run([sys.executable, "-m", "keras_ultimus.train", "--resume", str(out)],
                             capture_output=True, text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    subprocess.run([sys.executable, "-m", "keras_ultimus.train", *common, "--out", str(straight)],
                   capture_output=True, timeout=300, check=True)
    columns = ["epoch", "accuracy", "loss", "val_accuracy", "val_loss", "learning_rate"]
    log, reference = pd.read_csv(out / "log.csv")[columns], pd.read_csv(straight / "log.csv")[columns]
    pd.testing.assert_frame_equal(log, reference, check_exact=os.environ.get("KERAS_BACKEND", "tensorflow")
                                  == "tensorflow", rtol=1e-3, atol=1e-4)
    assert (out / "model.keras").is_file() and not (out / ".lock").exists()


def test_a_half_written_last_log_line_is_dropped_before_resume(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,accuracy\n0,0.1\n1,0.2\n2,0.")
    run_folder.drop_partial_last_line(log)
    assert log.read_text() == "epoch,accuracy\n0,0.1\n1,0.2\n"
    run_folder.check_log(log)

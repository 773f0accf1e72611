"""tools/park_run.py: a run killed mid-way, parked elsewhere and resumed there, logs what a straight run logs."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import assert_same_log
from tools import park_run

TINY = ["--conv-widths", "4,8,8", "--batch-size", "32", "--epochs", "5", "--deterministic"]
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
TRAIN = [sys.executable, "-m", "keras_ultimus.train"]


def test_park_refuses_a_folder_without_a_backup_and_an_existing_dest(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no whole backup"):
        park_run.park(run, tmp_path / "dest")
    (run / "backup" / "epoch-0").mkdir(parents=True)
    (tmp_path / "dest").mkdir()
    with pytest.raises(FileExistsError, match="dest="):
        park_run.park(run, tmp_path / "dest")


def test_park_keeps_only_the_newest_backup_and_the_logs(tmp_path):
    run = tmp_path / "run"
    for epoch in (1, 10, 2):
        (run / "backup" / f"epoch-{epoch}").mkdir(parents=True)
        (run / "backup" / f"epoch-{epoch}" / "latest.weights.h5").write_text(str(epoch))
    (run / "tensorboard").mkdir()
    for name in ("run.json", "log.csv", "summary.txt"):
        (run / name).write_text(name)
    assert park_run.park(run, tmp_path / "parked") == tmp_path / "parked" / "backup" / "epoch-10"
    kept = sorted(str(p.relative_to(tmp_path / "parked")) for p in (tmp_path / "parked").rglob("*"))
    assert kept == [
        "backup",
        "backup/epoch-10",
        "backup/epoch-10/latest.weights.h5",
        "log.csv",
        "run.json",
    ]
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.slow
@pytest.mark.multi_backend
def test_a_killed_run_parked_in_another_folder_resumes_there_to_the_straight_log(
    tmp_path, fake_cifar_tarball
):
    """The session hand-over on this backend: killed after a backup, parked, resumed elsewhere, same log."""
    out, parked, straight = tmp_path / "run", tmp_path / "pending" / "run", tmp_path / "straight"
    common = ["--data", str(fake_cifar_tarball), *TINY]

    def start(folder):
        return subprocess.Popen(
            [*TRAIN, *common, "--out", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )

    reference, child = start(straight), start(out)
    while child.poll() is None and not list((out / "backup").glob("epoch-*")):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(pd.read_csv(out / "log.csv")) < 5, "the run finished before it could be killed"
    parked.parent.mkdir()
    park_run.park(out, parked)
    shutil.rmtree(out)
    resumed = subprocess.run(
        [*TRAIN, "--resume", str(parked), "--data", str(fake_cifar_tarball)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-2000:]
    assert_same_log(parked, straight)
    assert (parked / "model.keras").is_file() and not out.exists()

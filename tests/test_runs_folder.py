"""Run-folder writes are whole or absent."""

import pytest

from keras_ultimus.runs import folder as run_folder


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "run.json"
    run_folder.write_atomic(path, "first")
    run_folder.write_atomic(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    run_folder.write_atomic(path, "old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_folder.os, "fsync", full_disk)
    with pytest.raises(OSError):
        run_folder.write_atomic(path, "new")
    assert path.read_text() == "old"

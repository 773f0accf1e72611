"""RunFolder: run.json first and at every epoch's end, and final figures equal to log.csv's last row after resumes."""

import json

import pandas as pd
import pytest

from keras_ultimus.config import default_config
from keras_ultimus.training import callbacks, recipe
from keras_ultimus.training.run_folder import RunFolder
from tests.helpers import random_arrays

pytestmark = pytest.mark.multi_backend


CONFIG = {
    **default_config(),
    "epochs": 3,
    "batch_size": 16,
    "conv_widths": [4, 8],
    "num_blocks": 1,
    "val_split": 0.25,  # heldout_* columns between val_* and learning_rate
    "pipeline": "numpy",
}


def last_row(out) -> dict:
    """What run.json's final figures were before RunFolder: log.csv's last row, read back with pandas."""
    return pd.read_csv(out / "log.csv").iloc[-1].to_dict()


def assert_final_is_the_last_row(out) -> None:
    final = json.loads((out / "run.json").read_text())["final"]
    row = last_row(out)
    assert list(final) == list(row)  # the same keys, in the log's column order
    assert all(final[k] == v and type(final[k]) is float for k, v in row.items()), (final, row)


def interrupt_at(monkeypatch, cls, hook: str, epoch: int | None = None) -> None:
    """Make `cls.hook` raise KeyboardInterrupt (at `epoch`, if given), as a Ctrl-C there would."""
    original = getattr(cls, hook)

    def stop(self, *args, **kwargs):
        if epoch is None or args[0] == epoch:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, hook, stop)


def test_run_json_is_written_first_and_keeps_every_segments_time(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert not folder.path.exists()  # nothing written before `open`
    info = {
        "config": {},
        "segments_seconds": [12.5],
    }  # a killed segment's time, written at its last epoch end
    folder.open(info, recipe.build({"conv_widths": [4, 8], "num_blocks": 1}))
    written = json.loads((folder.path / "run.json").read_text())
    assert written["segments_seconds"][0] == 12.5 and len(written["segments_seconds"]) == 2
    assert written["wall_seconds"] == pytest.approx(sum(written["segments_seconds"]), abs=0.1)
    assert "ultimus1" in (folder.path / "summary.txt").read_text()
    epoch_end = folder.callbacks()[-1]
    folder.start -= 5  # five seconds into the segment
    epoch_end.on_epoch_end(0, {})
    written = json.loads((folder.path / "run.json").read_text())
    assert written["segments_seconds"][1] >= 5 and written["wall_seconds"] >= 17.5


def test_final_figures_are_the_last_log_row_also_when_history_holds_only_the_resumed_epochs(
    tmp_path, monkeypatch
):
    out, data = tmp_path / "run", random_arrays()
    interrupt_at(monkeypatch, callbacks.EpochStats, "on_epoch_begin", epoch=2)
    with pytest.raises(KeyboardInterrupt):
        recipe.fit_run(CONFIG, data, out, verbose=0)
    monkeypatch.undo()
    assert len(pd.read_csv(out / "log.csv")) == 2
    result = recipe.fit_run(CONFIG, data, out, resume=True, verbose=0)
    assert result.history.epoch == [2] and result.folder == out
    assert_final_is_the_last_row(out)
    assert result.final == result.info["final"] == last_row(out)
    assert result.info == json.loads((out / "run.json").read_text())


def test_a_resume_with_no_epoch_left_takes_the_final_figures_from_the_log(tmp_path, monkeypatch):
    out, data = tmp_path / "run", random_arrays()
    # Stopped after the last epoch's backup, before fit's end removes it: a resume trains no epoch.
    interrupt_at(monkeypatch, callbacks.WholeBackup, "on_train_end")
    with pytest.raises(KeyboardInterrupt):
        recipe.fit_run(CONFIG, data, out, verbose=0)
    monkeypatch.undo()
    info = json.loads((out / "run.json").read_text())
    assert "finished" not in info and (out / "backup").is_dir()
    result = recipe.fit_run(CONFIG, data, out, resume=True, verbose=0)
    assert result.history.epoch == [] and (out / "model.keras").is_file()
    assert_final_is_the_last_row(out)
    assert result.final["epoch"] == 2.0

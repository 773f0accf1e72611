"""A run folder: made new or reopened to resume, it owns run.json and the callbacks that keep its other files."""

import json
import time
from pathlib import Path

import keras
import pandas as pd

from keras_ultimus.errors import UserError
from keras_ultimus.models.saving import save_for_inference
from keras_ultimus.runs.folder import CSV_NAME, INFO_NAME, MODEL_NAME, write_atomic
from keras_ultimus.training import checkpoints
from keras_ultimus.training.callbacks import OrderedCSVLogger, TrimLog, WholeBackup, tensorboard


class RunFolder:
    """A training run's folder: run.json, log.csv, summary.txt, backups, best.keras, TensorBoard logs, model.keras.

    Creating the object writes nothing (a resumed folder's run.json is read), so everything that can fail on bad
    input is checked before `open` writes the first file. run.json is then rewritten with the time so far at every
    epoch's end and, at `finish`, with the final figures: those of the row log.csv got last.

    Args:
        path: the folder; `open` creates it if it is missing.
        resume: take up the unfinished run the folder holds.

    Example:

    ```python
    folder = RunFolder(out)
    folder.open(run_info, model)
    history = model.fit(..., callbacks=folder.callbacks())
    folder.save_model(model)
    folder.finish(finished, folder.final())
    ```
    """

    def __init__(self, path: Path, resume: bool = False):
        self.path, self.resume = Path(path), resume
        self.start = time.perf_counter()  # this segment's clock
        self.info = json.loads((self.path / INFO_NAME).read_text()) if resume else {}
        self.log: OrderedCSVLogger | None = None

    def open(self, info: dict, model: keras.Model) -> None:
        """Create the folder (or take it up again) with `info` as its run.json; a new run's also gets summary.txt.

        run.json comes first: a folder that has one is a folder `--resume` can take up.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"out={self.path}: cannot create the run folder ({e.strerror})"
            ) from None
        self.info = info
        info.setdefault("segments_seconds", []).append(0.0)
        self.write()
        if not self.resume:
            lines = []
            model.summary(print_fn=lambda line, **_: lines.append(line + "\n"))
            write_atomic(self.path / "summary.txt", "".join(lines))
            model.summary()

    def callbacks(self, heldout: bool = False) -> list[keras.callbacks.Callback]:
        """The callbacks that keep the folder while `fit` runs, in the order they must run at each epoch's end.

        The log row is written before the backup, so a resume restores no epoch it has not logged; on resume,
        TrimLog drops the rows of epochs the restored state has not seen, so every epoch is logged once. With a
        `heldout` score in the logs, best.keras keeps the epoch that scored best on it; without, no best.keras is
        written (choosing by the per-epoch test figures would select on the test set). run.json's clock is last.
        """
        csv_path = self.path / CSV_NAME
        self.log = OrderedCSVLogger(csv_path, append=True)
        best = (
            checkpoints.PortableCheckpoint(
                self.path / "best.keras",
                monitor="heldout_accuracy",
                mode="max",
                save_best_only=True,
            )
            if heldout
            else None
        )
        return [
            *tensorboard(self.path / "tensorboard"),
            self.log,
            *([best] if best else []),
            WholeBackup(self.path / "backup"),
            TrimLog(csv_path, best),
            keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self.write()),
        ]

    def write(self) -> None:
        """Record the time since this segment started, and rewrite run.json."""
        self.info["segments_seconds"][-1] = round(time.perf_counter() - self.start, 1)
        self.info["wall_seconds"] = round(sum(self.info["segments_seconds"]), 1)
        write_atomic(self.path / INFO_NAME, json.dumps(self.info, indent=2))

    def save_model(self, model: keras.Model) -> None:
        """Write model.keras: slim, and loadable on any backend (`portable_batchnorm`)."""
        with checkpoints.portable_batchnorm(model):
            save_for_inference(model, self.path / MODEL_NAME)

    def final(self) -> dict:
        """The last epoch's figures, as log.csv's last row reads (every figure a float)."""
        if self.log is not None and self.log.last_row is not None:
            return dict(self.log.last_row)
        # This segment trained no epoch (it resumed after the last one's backup): its row is an earlier segment's.
        return pd.read_csv(self.path / CSV_NAME).iloc[-1].to_dict()

    def finish(self, finished: str, final: dict) -> None:
        """Record when training finished and its final figures, with the time, in run.json."""
        self.info["finished"] = finished
        self.info["final"] = final
        self.write()

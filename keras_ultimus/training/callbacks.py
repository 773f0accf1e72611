"""A training run's callbacks: per-epoch stats, the ordered log, log trimming, atomic backups, EMA, TensorBoard."""

import os
import re
import shutil
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import keras
import pandas as pd

from keras_ultimus.config import RecipeOptions
from keras_ultimus.errors import UserError
from keras_ultimus.runs.folder import fsync_tree


class EpochStats(keras.callbacks.Callback):
    """Add the learning rate and the epoch's wall time to the logs for CSVLogger."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        logs["epoch_seconds"] = round(time.perf_counter() - self._start, 2)


class CompileTime(keras.callbacks.Callback):
    """Print once per fit how long a compiled train step took to compile, apart from the steady step time.

    The first two steps compile (torch compiles again once the gradients exist); the next `steady` steps give the
    step time, and the compile time is the first two steps' time less two steady steps.
    """

    def __init__(self, steady: int = 10):
        super().__init__()
        self.steady = steady

    def on_train_begin(self, logs=None):
        self._times = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        if self._times and len(self._times) < 3 + self.steady:
            self._times.append(time.perf_counter())
            if len(self._times) == 3 + self.steady:
                self._report()

    def on_epoch_end(self, epoch, logs=None):
        if len(self._times) >= 4:  # an epoch shorter than the steps wanted: report what it gave
            self._report()

    def _report(self):
        times, self._times = self._times, []
        step = (times[-1] - times[2]) / (len(times) - 3)
        first = times[2] - times[0]
        print(
            f"jit: compiling took about {max(first - 2 * step, 0.0):.0f} s (the first 2 steps: {first:.1f} s); "
            f"then {step:.2f} s per step",
            file=sys.stderr,
            flush=True,
        )


class OrderedCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger with log.csv's columns in the README's order, not alphabetical; an appended log keeps its header.

    Keras' CSVLogger writes the columns in `self.keys`, which it sorts on the first epoch's end only while still
    None (an internal attribute, guarded by tests/test_contracts.py).
    """

    ORDER = (
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "heldout_loss",
        "heldout_accuracy",
        "learning_rate",
        "epoch_seconds",
    )

    def __init__(self, filename, separator=",", append=False):
        super().__init__(filename, separator, append)
        self.last_row: dict | None = (
            None  # the last row written, as the log reads back: every figure a float
        )

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and logs:
            path = Path(self.filename)
            header = path.read_text().partition("\n")[0].split(self.sep) if path.is_file() else [""]
            known = {k: i for i, k in enumerate(self.ORDER)}
            self.keys = (
                header[1:]
                if header[0] == "epoch"
                else sorted(logs, key=lambda k: (known.get(k, 99), k))
            )
        super().on_epoch_end(epoch, logs)
        logs = logs or {}
        self.last_row = {
            "epoch": float(epoch),
            **{
                k: float(logs[k]) if k in logs else float("nan") for k in self.keys
            },  # "NA" reads as NaN
        }


class TrimLog(keras.callbacks.Callback):
    """On a resumed fit, drop CSV rows of epochs that will run again and restore the best score.

    The first `on_epoch_begin` gets the epoch `BackupAndRestore` restored; it,
    not `optimizer.iterations`, says what was done (a step skipped by loss
    scaling would otherwise shift the count).
    """

    def __init__(self, csv_path: Path, checkpoint: keras.callbacks.ModelCheckpoint | None):
        super().__init__()
        self.csv_path, self.checkpoint, self._first = csv_path, checkpoint, True

    def on_epoch_begin(self, epoch, logs=None):
        if not self._first:
            return
        self._first = False
        # Also at epoch 0: a kill between epoch 0's CSV row and its first backup resumes there.
        if self.csv_path.exists() and self.csv_path.stat().st_size:
            log = pd.read_csv(self.csv_path)
            kept = log[log["epoch"] < epoch]
            if len(kept) < len(log):
                # One truncate, in place: CSVLogger already holds the file open, and the kept rows are its prefix.
                lines = self.csv_path.read_bytes().splitlines(keepends=True)
                os.truncate(self.csv_path, sum(map(len, lines[: 1 + len(kept)])))
            if len(kept) and self.checkpoint is not None and self.checkpoint.monitor in kept:
                self.checkpoint.best = float(kept[self.checkpoint.monitor].max())
        if epoch:
            print(f"Resumed after epoch {epoch}.")


# Room for the weights file's own structure beside the variables' bytes (an h5 file of this model: about 40 KiB).
H5_OVERHEAD = 1 << 20


def backup_bytes(model: keras.Model) -> int:
    """An upper bound on the size of `model`'s weights file: its and its optimizer's variables, plus overhead."""
    variables = [*model.variables, *(model.optimizer.variables if model.optimizer else [])]
    return sum(int(v.numpy().nbytes) for v in variables) + H5_OVERHEAD


def claim_space(path: Path, size: int) -> None:
    """Write `size` bytes to `path` and remove them, so a full disk fails here, in Python, as a clean OSError.

    h5py takes the interpreter down when a write fails mid-file (a segfault in its
    ObjectID dealloc, seen with h5py 3.14 on EFBIG), so the weights are written only
    once the space they need was shown to be there.
    """
    try:
        with open(path, "wb") as f:
            f.write(bytes(size))
    finally:
        path.unlink(missing_ok=True)


class WholeBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose state is whole or absent, so a kill at any moment resumes from the last whole epoch.

    Keras' own callback rewrites the weights and then the epoch count in place, in two files: a kill inside or
    between the writes resumes from a torn or mismatched state. Here each epoch's two files go into a new folder,
    `epoch-N`, which is synced and then renamed into place; the older folders are removed after.
    """

    FOLDER = re.compile(r"epoch-(\d+)")

    def __init__(self, backup_dir: Path):
        super().__init__(str(backup_dir))
        self.folder = Path(backup_dir)

    def newest(self) -> Path | None:
        """The newest whole epoch folder, or None."""
        epochs = {
            int(m[1]): p
            for p in self.folder.glob("epoch-*")
            if (m := self.FOLDER.fullmatch(p.name))
        }
        return epochs[max(epochs)] if epochs else None

    def _point_at(self, folder: Path) -> None:
        self._weights_path = str(folder / "latest.weights.h5")
        self._training_metadata_path = str(folder / "training_metadata.json")

    def _load_model(self):
        for partial in self.folder.glob(".partial-*"):
            shutil.rmtree(partial)
        newest = self.newest()
        if newest is None:
            return super()._load_model()  # no backup yet, or one written by Keras' own callback
        self._point_at(newest)
        try:
            super()._load_model()
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{newest}: unreadable backup ({type(e).__name__}); restore it or start a new run"
            ) from None

    def _save_model(self):
        partial = self.folder / f".partial-epoch-{self._current_epoch}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self._point_at(partial)
        claim_space(Path(self._weights_path), backup_bytes(self.model))
        super()._save_model()
        fsync_tree(partial)
        final = partial.with_name(f"epoch-{self._current_epoch}")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in self.folder.iterdir():
            if old != final and old.is_dir() and self.FOLDER.fullmatch(old.name):
                shutil.rmtree(old)
        for legacy in ("latest.weights.h5", "training_metadata.json"):
            (self.folder / legacy).unlink(missing_ok=True)


class HeldOutScore(keras.callbacks.Callback):
    """Score the model on a part of the training set held out from fitting, at every epoch end.

    Adds `heldout_loss` and `heldout_accuracy` to the epoch's logs (so to log.csv and to
    the checkpoint that picks best.keras), with the EMA weights when the recipe keeps an EMA.
    """

    def __init__(self, data, ema: bool = False):
        super().__init__()
        self.data, self.ema = data, ema

    def on_epoch_end(self, epoch, logs=None):
        swap = [keras.callbacks.SwapEMAWeights()] if self.ema else []
        scores = self.model.evaluate(self.data, verbose=0, return_dict=True, callbacks=swap)
        if logs is not None:
            logs["heldout_loss"], logs["heldout_accuracy"] = scores["loss"], scores["accuracy"]


def recipe_callbacks(options: RecipeOptions) -> list[keras.callbacks.Callback]:
    """The callbacks a recipe needs in `fit`: validation on the EMA weights when there is an EMA."""
    return [keras.callbacks.SwapEMAWeights()] if options.ema else []


class EventScalars(keras.callbacks.Callback):
    """Each epoch's logs as TensorBoard scalars, written by the `tensorboard` package alone (no TensorFlow).

    Where TensorFlow is missing, Keras' TensorBoard callback can't run; this writes what it would per epoch, in its
    layout: `train/` and `validation/` event files with `epoch_<name>` tags.
    """

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir, self._writers = Path(log_dir), {}

    def on_train_begin(self, logs=None):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writers = {
            split: EventFileWriter(str(self.log_dir / split)) for split in ("train", "validation")
        }

    def on_epoch_end(self, epoch, logs=None):
        from tensorboard.compat.proto import event_pb2, summary_pb2

        for name, value in (logs or {}).items():
            split, tag = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            summary = summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag=f"epoch_{tag}", simple_value=float(value))]
            )
            self._writers[split].add_event(
                event_pb2.Event(wall_time=time.time(), step=epoch, summary=summary)
            )
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()


def tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """Keras' TensorBoard callback where TensorFlow is importable, else the `tensorboard` package's own writer."""
    try:
        from keras_ultimus.datasets.tfdata import hide_gpus_from_tensorflow
    except ImportError:
        if find_spec("tensorboard") is None:
            print("TensorBoard logs need TensorFlow or the tensorboard package; skipping")
            return []
        return [EventScalars(log_dir)]
    hide_gpus_from_tensorflow(
        keras.backend.backend()
    )  # before TensorBoard starts TF under torch or jax
    return [keras.callbacks.TensorBoard(log_dir, write_graph=False)]

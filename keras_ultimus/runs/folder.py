"""A run or search folder's file names, the atomic writes that keep each file whole or absent, and its lock.

Imports no Keras.
"""

import csv
import fcntl
import os
import shutil
from pathlib import Path

from keras_ultimus.errors import FolderExistsError, UserError

CSV_NAME = "log.csv"
INFO_NAME = "run.json"
MODEL_NAME = "model.keras"
LOCK_NAME = ".lock"
# A search folder's files (the tuner writes them, report reads them).
LEADERBOARD_NAME = "leaderboard.csv"
BEST_NAME = "best.json"
RESULT_NAME = "result.json"
SEARCH_NAME = "search.json"
SKIPPED = "SKIPPED"  # the leaderboard status of a configuration the oracle did not train


def write_atomic(path: Path, text: str) -> None:
    """Write `text` through a temporary file, flushed to disk and then renamed, so a kill never leaves half a file.

    A failed write leaves the old file as it was and raises OSError naming `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e
    tmp.replace(path)


def fsync_tree(folder: Path) -> None:
    """Flush every file in `folder`, and the folder itself, to disk before it is renamed into place."""
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def drop_partial_last_line(path: Path) -> None:
    """Cut a log's last line if a kill or a full disk stopped it half-written (it has no newline yet)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def check_folder_path(out: Path) -> None:
    """A run folder's path must not be a file, nor sit below one."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out}: is a file, not a folder")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"out={out}: {parent} is a file, not a folder")


def check_new_folder(out: Path) -> None:
    """A new run folder must not exist yet (an empty folder, or one holding only its lock, is fine)."""
    check_folder_path(out)
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise FolderExistsError(f"out={out}: run folder exists; pick a new one, or resume it")


def check_log(path: Path) -> None:
    """A resumed run's log.csv must hold epochs 0, 1, 2, ... once each, or be absent: never a silent gap."""
    if not path.exists():
        return
    try:
        with open(path, newline="") as f:
            epochs = [row["epoch"] for row in csv.DictReader(f)]
        numbers = [float(e) for e in epochs]
    except (OSError, KeyError, ValueError, TypeError, csv.Error) as e:
        raise UserError(f"{path}: unreadable log ({type(e).__name__}: {e})") from None
    if numbers != list(range(len(numbers))):
        raise UserError(f"{path}: epochs {', '.join(epochs)} are not 0, 1, 2, ... once each (edited or corrupt); "
                        "restore it or start a new run")



def clear_folder(folder: Path) -> None:
    """Remove everything in `folder` but its lock, for a fresh start under that lock."""
    for path in folder.iterdir():
        if path.name == LOCK_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


class FolderLock:
    """An exclusive lock on a run, search or export folder, held by one live process: a second one is refused.

    The lock is an `flock` on `FOLDER/.lock` (or another `name`), which holds the owner's pid. The
    kernel drops it when its process dies, however it dies, so a lock left by
    a dead process is simply taken over.
    """

    def __init__(self, folder: Path, name: str = LOCK_NAME):
        self.folder, self.path, self._file, self._made = Path(folder), Path(folder) / name, None, []

    def __enter__(self) -> "FolderLock":
        self._made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]  # deepest first
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            file = open(self.path, "a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                owner = file.read().strip() or "unknown"
                file.close()
                raise UserError(f"{self.folder}: in use by another process (pid {owner}); wait for it or stop it") \
                    from None
            if self.path.exists() and os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino:
                break
            file.close()  # the owner removed this file as we locked it: lock the new one
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        self._file = file
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        self._file.close()  # closing releases the flock
        for folder in self._made:  # refused before anything was written: leave no trace, `runs/` included
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            else:
                break

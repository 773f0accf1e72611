"""Copy an unfinished run folder's resumable state into a folder that can be committed, to resume elsewhere.

Usage: python tools/park_run.py RUN DEST

A session that ends before its long run does parks the run, commits DEST, and
the next session (on any machine) continues it with
`python -m keras_ultimus.train --resume DEST --data $CIFAR10_PATH`.
Parked: `run.json`, `log.csv`, `best.keras` where there is one, and the newest
whole backup (`backup/epoch-N/`: the weights with the optimizer state, and the
epoch). TensorBoard files and the summary are left behind. DEST is written
whole or not at all.
"""

import argparse
import shutil
import sys
from pathlib import Path

FILES = ("run.json", "log.csv", "best.keras")


def newest_backup(run: Path) -> Path:
    """The run's newest whole backup folder, `backup/epoch-N`."""
    epochs = [p for p in (run / "backup").glob("epoch-*") if p.name.split("-", 1)[1].isdigit()]
    if not epochs:
        raise FileNotFoundError(
            f"run={run}: no whole backup yet (backup/epoch-N); nothing to resume from"
        )
    return max(epochs, key=lambda p: int(p.name.split("-", 1)[1]))


def park(run: Path, dest: Path) -> Path:
    """Copy `run`'s resumable state into the new folder `dest`; return the backup it holds."""
    if not (run / "run.json").is_file():
        raise FileNotFoundError(f"run={run}: not a run folder (no run.json)")
    if dest.exists():
        raise FileExistsError(f"dest={dest}: exists; remove it or pick another")
    backup = newest_backup(run)
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "backup").mkdir(parents=True)
    for name in FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, partial / name)
    shutil.copytree(backup, partial / "backup" / backup.name)
    partial.rename(dest)
    return dest / "backup" / backup.name


def main(argv: list[str] | None = None) -> int:
    """Park RUN into DEST and print the command that resumes it."""
    p = argparse.ArgumentParser(prog="python tools/park_run.py", description=main.__doc__)
    p.add_argument("run", type=Path, help="an unfinished run folder")
    p.add_argument(
        "dest", type=Path, help="new folder for its resumable state (e.g. runs-pending/NAME)"
    )
    args = p.parse_args(argv)
    try:
        backup = park(args.run, args.dest)
    except (FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"parked {backup}; resume with: python -m keras_ultimus.train --resume {args.dest} --data $CIFAR10_PATH"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

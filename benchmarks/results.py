"""What a finished run folder says: its run.json, final accuracy, and which split scored it; the seeds' lines.

`train` scores every epoch on the test split (its `val_*`), and so do the driver's runs, unless the data came
without test_batch.bin: then its stand-in, carved from the training files, is a held-out split, and the run
folder holds HELD_OUT (the driver writes it), so no figure of that run is called a test accuracy.
"""

import json
import statistics
from pathlib import Path

from keras_ultimus.runs.folder import INFO_NAME

HELD_OUT = "held-out.txt"
HELD_OUT_TEXT = (
    "This run was scored on a held-out split carved from the CIFAR-10 training files (the data had no "
    "test_batch.bin): its val_accuracy and test_accuracy_flip_tta are held-out accuracies, not test accuracies.\n"
)


def run_info(folder: Path) -> dict:
    """A run folder's run.json, or {} without one."""
    path = folder / INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def accuracy(folder: Path) -> float | None:
    """A finished run's last-epoch accuracy on the split it was scored on (`split`), else None."""
    info = run_info(folder)
    return info["final"]["val_accuracy"] if "finished" in info else None


def split(folder: Path) -> str:
    """The split a run was scored on: "held-out" (carved from the training files) or "test"."""
    return "held-out" if (folder / HELD_OUT).is_file() else "test"


def splits(folders: list[Path]) -> str:
    """The split of several runs: "held-out" if any was carved (never call a carved split "test")."""
    return "held-out" if any(split(f) == "held-out" for f in folders) else "test"


def mark_held_out(folder: Path) -> None:
    """Record in a run folder that its scoring split was carved from the training files."""
    (folder / HELD_OUT).write_text(HELD_OUT_TEXT)


def final_scores(folders: dict[int, Path]) -> dict[str, list[float]]:
    """The finished runs' final accuracies: "plain", and "flip TTA" where the run scored it."""
    finals = [run_info(f)["final"] for f in folders.values() if accuracy(f) is not None]
    return {
        "plain": [f["val_accuracy"] for f in finals],
        "flip TTA": [f["test_accuracy_flip_tta"] for f in finals if "test_accuracy_flip_tta" in f],
    }


def seed_lines(folders: dict[int, Path]) -> list[str]:
    """Each seed's final accuracy (plain, flip TTA when scored) and largest drop after epoch 3; mean ± std."""
    from keras_ultimus.report.runs import read_log
    from keras_ultimus.report.tables import largest_drop

    lines = []
    for seed, folder in folders.items():
        acc = accuracy(folder)
        if acc is None:
            lines.append(f"seed {seed}: not finished ({folder.name})")
            continue
        info = run_info(folder)
        tta = info["final"].get("test_accuracy_flip_tta")
        drop = largest_drop(read_log(folder / "log.csv"))  # epochs from 1, transitions from 3->4 on
        lines.append(
            f"seed {seed}: final {split(folder)} accuracy {100 * acc:.2f}%"
            + (f" ({100 * tta:.2f}% with flip TTA)" if tta is not None else "")
            + (
                f", largest drop after epoch 3 {drop[0]:.2f} points (epoch {drop[1]}->{drop[1] + 1})"
                if drop and drop[0] > 0
                else ", no drop after epoch 3"
            )
            + f" ({folder.name}, {info['config']['epochs']} epochs)"
        )
    for name, accs in final_scores(folders).items():
        if len(accs) > 1:
            lines.append(
                f"{name}: mean ± std (n-1) of {len(accs)} seeds: {100 * statistics.mean(accs):.2f} "
                f"± {100 * statistics.stdev(accs):.2f}%"
            )
    return lines

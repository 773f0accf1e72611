"""The search report: read a KerasTuner search folder and write its settings, result, leaderboard and charts."""

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from keras_ultimus.errors import UserError
from keras_ultimus.report import search_charts
from keras_ultimus.report.markdown import portable, portable_command, shown_path
from keras_ultimus.report.runs import read_json, read_log, read_table
from keras_ultimus.report.tables import leaderboard_table, markdown_table, pct
from keras_ultimus.runs.folder import (
    BEST_NAME,
    CSV_NAME,
    LEADERBOARD_NAME,
    RESULT_NAME,
    SEARCH_NAME,
    SKIPPED,
)

# What the report reads from the tuner's files.
LEADERBOARD_COLUMNS = ("trial_id", "status", "num_blocks", "residual", "best_val_accuracy")
RESULT_KEYS = ("best_trial", "val_accuracy", "test_accuracy", "test_images", "trials_completed")


@dataclass
class Search:
    """A KerasTuner search folder: leaderboard, settings, result and each trial's log (epochs 1-based)."""

    folder: Path
    board: pd.DataFrame
    settings: dict
    result: dict  # {} while the search has not finished
    logs: dict[str, pd.DataFrame]


def is_search(folder: Path) -> bool:
    """Whether `folder` is a search folder (it holds a leaderboard) rather than a run folder."""
    return (folder / LEADERBOARD_NAME).is_file()


def trial_log(folder: Path, trial_id: str) -> Path:
    """Where a trial's CSV log is: in KerasTuner's `trial_<id>` folder (`Tuner.get_trial_dir`)."""
    return folder / f"trial_{trial_id}" / CSV_NAME


def read_search(folder: Path) -> Search:
    """Read a search folder; trials without a log.csv (failed, or over the budget) have no curve."""
    ids = {"trial_id": str, "tuner/trial_id": str}  # keep "0003" as it is
    board = read_table(
        folder / LEADERBOARD_NAME,
        LEADERBOARD_COLUMNS,
        ("num_blocks", "best_val_accuracy"),
        gaps=True,
        dtype=ids,
    )
    logs = {
        t: read_log(trial_log(folder, t))
        for t in board["trial_id"]
        if trial_log(folder, t).is_file()
    }
    result = read_json(folder / RESULT_NAME, required=False)
    for key in RESULT_KEYS:
        if result and key not in result:
            raise UserError(f"{folder / RESULT_NAME}: missing key '{key}'")
    return Search(folder, board, read_json(folder / SEARCH_NAME), result, logs)


def search_command(search: Search, settings: dict) -> str:
    """The recorded search command; for older folders without one, its equivalent from the settings."""
    if "command" in search.settings:
        return f"`{portable_command(search.settings['command'])}`"
    flags = [
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
        for k, v in settings.items()
        if v is not None
    ]
    return (
        "not recorded in search.json; from its settings (`--data` unknown) it was the equivalent of "
        f"`python tuner/tune.py --out {shown_path(search.folder)} {' '.join(flags)}`"
    )


def write_search_report(
    search: Search, out: Path, command: str, published: Path | None = None
) -> None:
    """Write report.md, the two search charts and copies of the search's files into `out`.

    `published` is the folder the report ends up in, when `out` is a scratch folder renamed to it at the end.
    """
    result, board = search.result, search.board
    settings = {
        k: v for k, v in {**search.settings, **result.get("settings", {})}.items() if k != "command"
    }
    best_trial = result.get("best_trial")
    md = [
        f"# Search report: `{search.folder.resolve().name}`",
        "",
        f"Generated {datetime.now():%Y-%m-%d %H:%M} by `{portable_command(command)}`.",
        "",
        "## Search",
        "",
        f"- Folder: `{shown_path(search.folder)}`",
        f"- Command: {search_command(search, settings)}",
        "",
        markdown_table(
            ["setting", "value"],
            [
                [k, "not set (default)" if v is None else f"`{json.dumps(portable(v))}`"]
                for k, v in settings.items()
            ],
        ),
        "",
        "## Result",
        "",
    ]
    if result:
        md += [
            f"- Best trial **{best_trial}**: validation accuracy **{pct(result['val_accuracy'])}** "
            "(the objective, on a seeded split of the training images)",
            f"- Its model's test accuracy, measured once at the end: **{pct(result['test_accuracy'])}** on "
            f"{result['test_images']:,} official test images",
            f"- Trials completed: {result['trials_completed']} of {(board['status'] != SKIPPED).sum()} "
            "in the leaderboard",
            *(
                [
                    f"- Configurations not trained (over the parameter budget, or a stem too small for its convs): "
                    f"{result['configurations_skipped']}, listed last in the leaderboard with the reason"
                ]
                if result.get("configurations_skipped")
                else []
            ),
            f"- Train it in full: `python -m keras_ultimus.train --config {shown_path((published or out) / BEST_NAME)}`"
            f" (the search's `{BEST_NAME}`, copied beside this report, so the command works where the report is"
            " committed)",
            "",
        ]
    else:
        md += [f"No {RESULT_NAME}: the search has not finished.", ""]
    search_charts.plot_search_depth(board, best_trial, out / "search_depth.png")
    search_charts.plot_search_curves(board, search.logs, best_trial, out / "search_curves.png")
    md += [
        "## Leaderboard",
        "",
        "Best validation accuracy first, one row per trial.",
        "",
        leaderboard_table(board),
        "",
        "![Best validation accuracy vs number of Ultimus blocks](search_depth.png)",
        "",
        "![Validation accuracy per epoch, all trials](search_curves.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    shutil.copyfile(search.folder / LEADERBOARD_NAME, out / LEADERBOARD_NAME)
    for name in (SEARCH_NAME, RESULT_NAME, BEST_NAME):
        if (search.folder / name).is_file():
            data = read_json(search.folder / name)
            (out / name).write_text(json.dumps(portable(data), indent=2) + "\n")

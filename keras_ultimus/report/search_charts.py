"""Charts of a search and of the driver's comparisons: accuracy against depth, the curves, the reproduction."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keras_ultimus.report.charts import save


def trial_label(row: dict) -> str:
    """'0003: 4 blocks, residual on (from 0000)' for a leaderboard row."""
    n, on, parent = (
        int(row["num_blocks"]),
        str(row["residual"]) == "True",
        row.get("tuner/trial_id"),
    )
    return f"{row['trial_id']}: {n} block{'s' * (n != 1)}, residual {'on' if on else 'off'}" + (
        f" (from {parent})" if isinstance(parent, str) else ""
    )


def plot_search_depth(board: pd.DataFrame, best_trial: str | None, path: Path) -> None:
    """Best val accuracy of each trial against its number of Ultimus blocks, by residual on/off."""
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    board = board.dropna(subset=["best_val_accuracy"])
    on = board["residual"].astype(str) == "True"  # a column with gaps reads as text
    x = board["num_blocks"] + np.where(on, -0.08, 0.08)  # side by side, not on top of each other
    y = 100 * board["best_val_accuracy"]
    for kind, marker, color, label in (
        (on, "o", "C0", "residual on"),
        (~on, "s", "C1", "residual off"),
    ):
        if kind.any():  # a legend entry only for what some trial used
            ax.scatter(x[kind], y[kind], marker=marker, s=40, alpha=0.8, color=color, label=label)
    if best_trial is not None:
        best = board["trial_id"] == best_trial
        ax.scatter(
            x[best],
            y[best],
            marker="*",
            s=300,
            facecolor="none",
            edgecolor="k",
            label=f"best: trial {best_trial}",
        )
    ax.set(
        title="Best validation accuracy of each trial vs depth",
        xlabel="number of Ultimus blocks",
        ylabel="best validation accuracy (%)",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, path)


def plot_test_depth(
    series: dict[str, tuple[list[int], list[float]]], epochs: int, path: Path, split: str = "test"
) -> None:
    """Accuracy on `split` of one configuration trained at several depths (all else held), one line per label."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for label, (blocks, accuracies) in series.items():
        ax.plot(blocks, [100 * a for a in accuracies], "o-", label=label)
    ax.set(
        xlabel="number of Ultimus blocks (all else at the best configuration)",
        ylabel=f"{split} accuracy (%)",
        title=f"{split.capitalize()} accuracy vs depth, {epochs} epochs, seed 0",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    save(fig, path)


def plot_reproduction(
    curves: dict[str, pd.DataFrame], published: dict[int, float], path: Path, split: str = "test"
) -> None:
    """Accuracy on `split` per epoch of each run's log (`read_log`: epochs from 1), beside a published log's."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, log in curves.items():
        ax.plot(log["epoch"], 100 * log["val_accuracy"], "o-", ms=3, label=label)
    epochs = sorted(published)
    ax.plot(
        epochs,
        [100 * published[e] for e in epochs],
        "k*",
        ms=12,
        ls="none",
        label="the PyTorch original's log (the epochs it gives)"
        + ("; test" if split != "test" else ""),
    )
    ax.set(
        title=f"{split.capitalize()} accuracy per epoch on the original's schedule",
        xlabel="epoch",
        ylabel=f"{split} accuracy (%)",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def plot_search_curves(
    board: pd.DataFrame, logs: dict[str, pd.DataFrame], best_trial: str | None, path: Path
) -> None:
    """Validation accuracy per epoch of every trial, overlaid (Hyperband continuations start later)."""
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    rows = [r for r in board.to_dict("records") if r["trial_id"] in logs]
    for i, row in enumerate(rows):
        log, best = logs[row["trial_id"]], row["trial_id"] == best_trial
        # colour, line style and marker together tell 150 trials apart
        ax.plot(
            log["epoch"],
            100 * log["val_accuracy"],
            color=f"C{i % 10}",
            ls=("-", "--", ":")[i // 10 % 3],
            marker="osv^D"[(i + i // 30) % 5],
            ms=7 if best else 4,
            lw=2.5 if best else 1.2,
            zorder=3 if best else 2,
            label=trial_label(row) + " (best)" * best,
        )
    ax.set(
        title="Validation accuracy per epoch, all trials",
        xlabel="epoch",
        ylabel="validation accuracy (%)",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        ncol=math.ceil(len(rows) / 25) or 1,
        title="trial (leaderboard order)",
        title_fontsize=8,
    )
    save(fig, path)

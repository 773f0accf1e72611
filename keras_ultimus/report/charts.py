"""Report charts as PNG files, drawn with matplotlib's `Figure` (no pyplot, so no GUI backend is needed)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keras_ultimus.constants import CLASS_NAMES
from keras_ultimus.plotting import save_png
from keras_ultimus.report.predictions import Evaluation
from keras_ultimus.report.runs import Run

GALLERY_SIZE = 24
DPI = 120


def save(fig: Figure, path: Path) -> None:
    """Write `fig` as a PNG, trimmed to its content."""
    save_png(fig, path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)


def run_label(run: Run, runs: list[Run], split: str) -> str:
    """A legend entry: the split alone for one run, else run name and split."""
    return split if len(runs) == 1 else f"{run.name} {split}"


def plot_curves(runs: list[Run], path: Path) -> None:
    """Train and test loss and accuracy per epoch, runs overlaid."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, run in enumerate(runs):
        color = f"C{i}"
        e = run.log["epoch"]
        for ax, column, scale in ((ax_loss, "loss", 1), (ax_acc, "accuracy", 100)):
            ax.plot(
                e,
                run.log[column] * scale,
                "o-",
                ms=3,
                color=color,
                label=run_label(run, runs, "train"),
            )
            ax.plot(
                e,
                run.log[f"val_{column}"] * scale,
                "s--",
                ms=3,
                color=color,
                label=run_label(run, runs, "test"),
            )
    ax_loss.set(title="Loss per epoch", xlabel="epoch", ylabel="cross-entropy loss (nats)")
    ax_acc.set(title="Accuracy per epoch", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)


def plot_learning_rate(runs: list[Run], path: Path) -> None:
    """Learning rate at the end of each epoch, log scale, runs overlaid."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, run in enumerate(runs):
        if "learning_rate" in run.log.columns:
            ax.plot(
                run.log["epoch"],
                run.log["learning_rate"],
                "o-",
                ms=3,
                color=f"C{i}",
                label=run.name if len(runs) > 1 else "Adam learning rate",
            )
    ax.set(
        title="Learning rate at the end of each epoch (one-cycle schedule)",
        xlabel="epoch",
        ylabel="learning rate (log scale)",
        yscale="log",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def plot_per_class(evaluations: dict[str, Evaluation], path: Path) -> None:
    """Test accuracy per class, one bar group per class, one bar per run."""
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(evaluations)
    x = np.arange(len(CLASS_NAMES))
    for i, (name, ev) in enumerate(evaluations.items()):
        acc = 100 * np.nan_to_num(ev.class_accuracy())
        overall = 100 * np.mean(ev.predicted == ev.labels)
        label = f"{name} (all classes: {overall:.1f}%)" if len(evaluations) > 1 else "per class"
        bars = ax.bar(
            x + (i - (len(evaluations) - 1) / 2) * width, acc, width, color=f"C{i}", label=label
        )
        if len(evaluations) == 1:
            ax.axhline(
                overall, color="k", ls="--", lw=1, label=f"all classes: {overall:.1f}%", zorder=1
            )
            ax.bar_label(
                bars,
                fmt="%.1f",
                fontsize=8,
                padding=3,
                zorder=3,
                bbox=dict(boxstyle="square,pad=0.15", fc="white", ec="none"),
            )
    n = len(next(iter(evaluations.values())).labels)
    ax.set(
        title=f"Test accuracy per class ({n:,} test images)",
        xlabel="class",
        ylabel="test accuracy (%)",
        ylim=(0, 105),
    )
    ax.set_xticks(x, CLASS_NAMES, rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, path)


def plot_confusion(ev: Evaluation, title: str, path: Path) -> None:
    """Confusion matrix: counts, coloured by the fraction of each true class."""
    k = len(CLASS_NAMES)
    counts = ev.confusion()
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                counts[i, j],
                ha="center",
                va="center",
                fontsize=8,
                color="white" if fractions[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(k), CLASS_NAMES)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    save(fig, path)


def plot_gallery(ev: Evaluation, title: str, path: Path) -> np.ndarray:
    """The most confident mistakes on the test split; returns the indices shown."""
    wrong = np.flatnonzero(ev.predicted != ev.labels)
    wrong = wrong[np.argsort(-ev.probs[wrong].max(axis=1), kind="stable")][:GALLERY_SIZE]
    cols = 6
    rows = max(1, math.ceil(len(wrong) / cols))
    fig = Figure(figsize=(cols * 2, rows * 2.45), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        p = ev.predicted[i]
        ax.imshow(ev.images[i], interpolation="nearest")
        ax.set_title(
            f"true: {CLASS_NAMES[ev.labels[i]]}\npred: {CLASS_NAMES[p]} ({ev.probs[i, p]:.0%})",
            fontsize=9,
        )
    if not len(wrong):
        axes[0, 0].text(0, 0.5, "no misclassified test images", fontsize=10)
    fig.suptitle(title, fontsize=11)
    save(fig, path)
    return wrong


def plot_attention(ev: Evaluation, title: str, path: Path) -> None:
    """Mean attention map of each Ultimus block over the test images."""
    n = len(ev.attention)
    fig = Figure(figsize=(3.2 * n + 1.5, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)
    vmin = min(float(a.min()) for a in ev.attention)
    vmax = max(float(a.max()) for a in ev.attention)
    for b, (ax, attention) in enumerate(zip(axes[0], ev.attention), start=1):
        image = ax.imshow(attention, cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set(title=f"block {b}", xlabel="key index j")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_ylabel("query index i")
    uniform = 1 / ev.attention[0].shape[-1]
    fig.colorbar(
        image,
        ax=axes[0].tolist(),
        shrink=0.9,
        label=f"mean attention weight (uniform: {uniform:.3g})",
    )
    fig.suptitle(title, fontsize=11)
    save(fig, path)


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
    series: dict[str, tuple[list[int], list[float]]], epochs: int, path: Path
) -> None:
    """Test accuracy of one configuration trained at several depths (all else held), one line per label."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for label, (blocks, accuracies) in series.items():
        ax.plot(blocks, [100 * a for a in accuracies], "o-", label=label)
    ax.set(
        xlabel="number of Ultimus blocks (all else at the best configuration)",
        ylabel="test accuracy (%)",
        title=f"Test accuracy vs depth, {epochs} epochs, seed 0",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    save(fig, path)


def plot_reproduction(
    curves: dict[str, pd.DataFrame], published: dict[int, float], path: Path
) -> None:
    """Test accuracy per epoch of each run's log (`read_log`: epochs from 1), beside the epochs a published log gave."""
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
        label="the PyTorch original's log (the epochs it gives)",
    )
    ax.set(
        title="Test accuracy per epoch on the original's schedule",
        xlabel="epoch",
        ylabel="test accuracy (%)",
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

"""Report charts as PNG files, drawn with matplotlib's `Figure` (no pyplot, so no GUI backend is needed)."""

import math
from pathlib import Path

import numpy as np
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

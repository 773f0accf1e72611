"""Markdown tables and number formats for reports: per epoch, per run, per class, per layer, per trial."""

import math

import keras
import numpy as np
import pandas as pd

from keras_ultimus.constants import CLASS_NAMES
from keras_ultimus.report.predictions import Evaluation
from keras_ultimus.report.runs import OPTIONAL_COLUMNS, Run


def markdown_table(headers: list[str], rows: list[list], right: tuple[int, ...] = ()) -> str:
    """A GitHub markdown table; columns listed in `right` are right-aligned."""
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = [headers, rule, *[[str(c) for c in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def pct(x: float) -> str:
    """A fraction as a percentage with two decimals ('n/a' for NaN)."""
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"


def duration(seconds: float | None) -> str:
    """Seconds, and the same as h:mm:ss."""
    if seconds is None:
        return "n/a"
    h, rest = divmod(round(seconds), 3600)
    return f"{seconds:,.1f} s ({h}:{rest // 60:02d}:{rest % 60:02d})"


def summary(log: pd.DataFrame) -> dict:
    """Final and best values of each metric, with the (1-based) epoch of the best."""
    out = {}
    for column, best in (
        ("loss", "idxmin"),
        ("accuracy", "idxmax"),
        ("val_loss", "idxmin"),
        ("val_accuracy", "idxmax"),
    ):
        i = getattr(log[column], best)()
        out[column] = (log[column].iloc[-1], log[column][i], int(log["epoch"][i]))
    return out


def largest_drop(log: pd.DataFrame, after: int = 3) -> tuple[float, int] | None:
    """Largest test-accuracy drop (points) between consecutive epochs from `after`->`after+1` on."""
    acc = log.set_index("epoch")["val_accuracy"] * 100
    drops = [(acc[e] - acc[e + 1], e) for e in acc.index if e >= after and e + 1 in acc.index]
    return max(drops) if drops else None


def model_table(model: keras.Model, trainable: int) -> str:
    """The model in the reference's format: layer (type), output shape, params; then totals."""
    rows = [
        [
            f"{layer.name} ({type(layer).__name__})",
            f"{tuple(layer.output.shape)}",
            f"{layer.count_params():,}",
        ]
        for layer in model.layers
    ]
    total = model.count_params()
    return (
        markdown_table(["Layer (type)", "Output Shape", "Param #"], rows, right=(2,))
        + f"\n\nTotal params: {total:,} · Trainable params: {trainable:,}"
        + f" · Non-trainable params: {total - trainable:,}"
    )


def epoch_table(log: pd.DataFrame) -> str:
    """One row per epoch: losses, accuracies, learning rate and epoch time."""
    headers = ["epoch", "train loss", "train acc", "test loss", "test acc"]
    extra = [c for c in OPTIONAL_COLUMNS if c in log.columns]
    headers += [{"learning_rate": "learning rate", "epoch_seconds": "time (s)"}[c] for c in extra]
    rows = []
    for r in log.itertuples():
        row = [r.epoch, f"{r.loss:.4f}", pct(r.accuracy), f"{r.val_loss:.4f}", pct(r.val_accuracy)]
        row += [
            f"{getattr(r, c):.3g}" if c == "learning_rate" else f"{getattr(r, c):.1f}"
            for c in extra
        ]
        rows.append(row)
    return markdown_table(headers, rows, right=tuple(range(len(headers))))


def comparison_table(runs: list[Run]) -> str:
    """One row per run, plus mean ± std of the final and best test accuracy."""
    headers = [
        "run",
        "backend",
        "seed",
        "epochs",
        "wall time",
        "final train acc",
        "final test loss",
        "final test acc",
        "best test acc (epoch)",
    ]
    rows, finals, bests = [], [], []
    for run in runs:
        s = summary(run.log)
        finals.append(s["val_accuracy"][0])
        bests.append(s["val_accuracy"][1])
        rows.append(
            [
                f"`{run.name}`",
                run.info.get("backend", "n/a"),
                run.info["config"].get("seed", "n/a"),
                len(run.log),
                duration(run.info.get("wall_seconds")),
                pct(s["accuracy"][0]),
                f"{s['val_loss'][0]:.4f}",
                pct(s["val_accuracy"][0]),
                f"{pct(s['val_accuracy'][1])} ({s['val_accuracy'][2]})",
            ]
        )
    epochs = sorted({len(run.log) for run in runs})
    label = (
        "mean ± std"
        if len(epochs) == 1
        else f"mean ± std (of {', '.join(map(str, epochs))} epochs: mixed)"
    )
    rows.append(
        [
            label,
            "",
            "",
            "",
            "",
            "",
            "",
            f"{100 * np.mean(finals):.2f} ± {100 * np.std(finals, ddof=1):.2f}%",
            f"{100 * np.mean(bests):.2f} ± {100 * np.std(bests, ddof=1):.2f}%",
        ]
    )
    return markdown_table(headers, rows, right=tuple(range(2, len(headers))))


def per_class_table(evaluation: Evaluation) -> str:
    """Test images, correct predictions and accuracy per class."""
    counts = evaluation.confusion()
    rows = [
        [name, counts[c].sum(), counts[c, c], pct(accuracy)]
        for c, (name, accuracy) in enumerate(zip(CLASS_NAMES, evaluation.class_accuracy()))
    ]
    correct = np.trace(counts)
    rows.append(["**all**", counts.sum(), correct, pct(correct / counts.sum())])
    return markdown_table(["class", "test images", "correct", "accuracy"], rows, right=(1, 2, 3))


def leaderboard_cell(column: str, value) -> str:
    """One leaderboard value: accuracy as a percentage, counts with separators, blanks for gaps."""
    if pd.isna(value):
        return ""
    if column == "best_val_accuracy":
        return pct(value)
    if isinstance(value, (str, bool, np.bool_)):
        return str(value)
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3g}"


def leaderboard_table(board: pd.DataFrame) -> str:
    """A search's leaderboard as it is, one row per trial; numeric columns right-aligned."""
    numeric = tuple(
        i
        for i, c in enumerate(board.columns)
        if pd.api.types.is_numeric_dtype(board[c]) and not pd.api.types.is_bool_dtype(board[c])
    )
    rows = [[leaderboard_cell(c, v) for c, v in row.items()] for row in board.to_dict("records")]
    return markdown_table(list(board.columns), rows, right=numeric)

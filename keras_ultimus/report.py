"""Report on training runs: `python -m keras_ultimus.report RUN [RUN...] --out reports/NAME`.

Reads each run folder's `log.csv` and `run.json` with pandas and writes
`report.md` with PNG charts. Per-class accuracy, the confusion matrix, the
gallery of mistakes and the attention maps come from the run's saved
`model.keras` evaluated on the CIFAR-10 test split (honouring the run's
`limit_test`); runs without a model, or `--no-model`, skip them.

A search folder of `tuner/tune.py` (one holding `leaderboard.csv`) gets a
search report instead: settings, result, leaderboard and per-trial charts.
"""

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # not pyplot: no GUI backend, PNGs render with Agg
from matplotlib.ticker import MaxNLocator

from keras_ultimus.data import DataError, load_cifar10
from keras_ultimus.layers import UltimusLayer
from keras_ultimus.model import CLASS_NAMES, build_model
from keras_ultimus.recipe import CSV_NAME, model_kwargs

REQUIRED_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
OPTIONAL_COLUMNS = ("learning_rate", "epoch_seconds")
GALLERY_SIZE = 24
DPI = 120


class ReportError(Exception):
    """Input the report can't use; its message is one line for the user."""


@dataclass
class Evaluation:
    """A saved model's predictions on the test split."""

    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray
    probs: np.ndarray
    attention: list[np.ndarray]  # mean (key_dim, key_dim) map per Ultimus block

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def confusion(self) -> np.ndarray:
        """Counts: row = true class, column = predicted class."""
        counts = np.zeros((len(CLASS_NAMES),) * 2, int)
        np.add.at(counts, (self.labels, self.predicted), 1)
        return counts

    def class_accuracy(self) -> np.ndarray:
        """Test accuracy of each class (NaN for a class with no test images)."""
        counts = self.confusion()
        with np.errstate(invalid="ignore"):
            return np.diag(counts) / counts.sum(axis=1)


@dataclass
class Run:
    """One run folder: its CSV log (epochs 1-based), run.json, model and test-split evaluation."""

    name: str
    folder: Path
    log: pd.DataFrame
    info: dict
    model: keras.Model | None = None
    model_note: str = ""
    skipped: str = ""  # why the test-split evaluation was skipped
    evaluation: Evaluation | None = None


def read_table(path: Path, required: tuple[str, ...], numeric: tuple[str, ...], gaps: bool = False,
               **read_csv) -> pd.DataFrame:
    """Read a CSV having the `required` columns; `numeric` ones become numbers (gaps allowed if `gaps`)."""
    if not path.is_file():
        raise ReportError(f"{path}: no such file")
    try:
        table = pd.read_csv(path, **read_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    for column in required:
        if column not in table.columns:
            raise ReportError(f"{path}: missing column '{column}'")
    for column in (c for c in numeric if c in table.columns):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = ~np.isfinite(values) & (table[column].notna() | (not gaps))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ReportError(
                f"{path}: column '{column}' has malformed value {table[column].iloc[row]!r} "
                f"on line {row + 2}"
            )
        table[column] = values
    return table


def read_log(path: Path) -> pd.DataFrame:
    """Read and validate a run's CSV log; epochs become 1-based, as Keras prints them."""
    log = read_table(path, REQUIRED_COLUMNS, (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))
    if log.empty:
        raise ReportError(f"{path}: no epochs logged")
    if (log["epoch"] % 1 != 0).any() or log["epoch"].duplicated().any():
        raise ReportError(f"{path}: column 'epoch' must hold distinct whole numbers")
    log = log.sort_values("epoch").reset_index(drop=True)
    log["epoch"] = log["epoch"].astype(int) + 1
    return log


def read_run(folder: Path, name: str) -> Run:
    """Read a run folder's CSV log and run.json."""
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such run folder")
    info = read_json(folder / "run.json")
    if not isinstance(info.get("config"), dict):
        raise ReportError(f"{folder / 'run.json'}: missing key 'config'")
    return Run(name, folder, read_log(folder / CSV_NAME), info)


def read_json(path: Path, required: bool = True) -> dict:
    """A JSON object from `path`; {} if it is absent and not `required`."""
    if not path.is_file():
        if required:
            raise ReportError(f"{path}: no such file")
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a JSON object")
    return data


def run_names(folders: list[Path]) -> list[str]:
    """Short unique names for the runs: folder names, numbered when they clash."""
    names = [f.resolve().name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names, start=1)]
    return names


# ---------------------------------------------------------------- markdown


def markdown_table(headers: list[str], rows: list[list], right: tuple[int, ...] = ()) -> str:
    """A GitHub markdown table; columns listed in `right` are right-aligned."""
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = [headers, rule, *[[str(c) for c in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    h, rest = divmod(round(seconds), 3600)
    return f"{seconds:,.1f} s ({h}:{rest // 60:02d}:{rest % 60:02d})"


def summary(log: pd.DataFrame) -> dict:
    """Final and best values of each metric, with the (1-based) epoch of the best."""
    out = {}
    for column, best in (("loss", "idxmin"), ("accuracy", "idxmax"),
                         ("val_loss", "idxmin"), ("val_accuracy", "idxmax")):
        i = getattr(log[column], best)()
        out[column] = (log[column].iloc[-1], log[column][i], int(log["epoch"][i]))
    return out


def largest_drop(log: pd.DataFrame, after: int = 3) -> tuple[float, int] | None:
    """Largest test-accuracy drop (points) between consecutive epochs from `after`->`after+1` on."""
    acc = log.set_index("epoch")["val_accuracy"] * 100
    drops = [(acc[e] - acc[e + 1], e) for e in acc.index if e >= after and e + 1 in acc.index]
    return max(drops) if drops else None


def model_table(model: keras.Model) -> str:
    """The model in the reference's format: layer (type), output shape, params; then totals."""
    rows = [[f"{layer.name} ({type(layer).__name__})", f"{tuple(layer.output.shape)}",
             f"{layer.count_params():,}"] for layer in model.layers]
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
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
        row += [f"{getattr(r, c):.3g}" if c == "learning_rate" else f"{getattr(r, c):.1f}" for c in extra]
        rows.append(row)
    return markdown_table(headers, rows, right=tuple(range(len(headers))))


def comparison_table(runs: list[Run]) -> str:
    """One row per run, plus mean ± std of the final and best test accuracy."""
    headers = ["run", "backend", "seed", "epochs", "wall time", "final train acc",
               "final test loss", "final test acc", "best test acc (epoch)"]
    rows, finals, bests = [], [], []
    for run in runs:
        s = summary(run.log)
        finals.append(s["val_accuracy"][0])
        bests.append(s["val_accuracy"][1])
        rows.append([f"`{run.name}`", run.info.get("backend", "n/a"), run.info["config"].get("seed", "n/a"),
                     len(run.log), duration(run.info.get("wall_seconds")), pct(s["accuracy"][0]),
                     f"{s['val_loss'][0]:.4f}", pct(s["val_accuracy"][0]),
                     f"{pct(s['val_accuracy'][1])} ({s['val_accuracy'][2]})"])
    rows.append(["mean ± std", "", "", "", "", "", "",
                 f"{100 * np.mean(finals):.2f} ± {100 * np.std(finals, ddof=1):.2f}%",
                 f"{100 * np.mean(bests):.2f} ± {100 * np.std(bests, ddof=1):.2f}%"])
    return markdown_table(headers, rows, right=tuple(range(2, len(headers))))


def per_class_table(evaluation: Evaluation) -> str:
    """Test images, correct predictions and accuracy per class."""
    counts = evaluation.confusion()
    rows = [[name, counts[c].sum(), counts[c, c], pct(accuracy)]
            for c, (name, accuracy) in enumerate(zip(CLASS_NAMES, evaluation.class_accuracy()))]
    correct = np.trace(counts)
    rows.append(["**all**", counts.sum(), correct, pct(correct / counts.sum())])
    return markdown_table(["class", "test images", "correct", "accuracy"], rows, right=(1, 2, 3))


# ---------------------------------------------------------------- model


def load_model(path: Path) -> keras.Model:
    """Load a saved run model for inference (no optimizer)."""
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad archive; the user needs one line.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReportError(f"{path}: can't load the model ({reason})") from None


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Predict class probabilities and mean attention maps on the test images, with a progress bar."""
    blocks = [layer for layer in model.layers if isinstance(layer, UltimusLayer)]
    probe = keras.Model(model.inputs, [model.outputs[0], *(block.input for block in blocks)])
    logits, *features = probe.predict(images.astype("float32"), batch_size=250, verbose=1)
    # The block's symbolic call only returns outputs, so get the maps eagerly from its (small) inputs.
    attention = [
        keras.ops.convert_to_numpy(block(x, return_attention_scores=True)[1]).mean(axis=0)
        for block, x in zip(blocks, features)
    ]
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return Evaluation(images, labels, probs, attention)


# ---------------------------------------------------------------- charts


def save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)


def run_label(run: Run, runs: list[Run], split: str) -> str:
    return split if len(runs) == 1 else f"{run.name} {split}"


def plot_curves(runs: list[Run], path: Path) -> None:
    """Train and test loss and accuracy per epoch, runs overlaid."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, run in enumerate(runs):
        color = f"C{i}"
        e = run.log["epoch"]
        for ax, column, scale in ((ax_loss, "loss", 1), (ax_acc, "accuracy", 100)):
            ax.plot(e, run.log[column] * scale, "o-", ms=3, color=color, label=run_label(run, runs, "train"))
            ax.plot(e, run.log[f"val_{column}"] * scale, "s--", ms=3, color=color,
                    label=run_label(run, runs, "test"))
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
            ax.plot(run.log["epoch"], run.log["learning_rate"], "o-", ms=3, color=f"C{i}",
                    label=run.name if len(runs) > 1 else "Adam learning rate")
    ax.set(title="Learning rate at the end of each epoch (one-cycle schedule)", xlabel="epoch",
           ylabel="learning rate (log scale)", yscale="log")
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
        bars = ax.bar(x + (i - (len(evaluations) - 1) / 2) * width, acc, width, color=f"C{i}", label=label)
        if len(evaluations) == 1:
            ax.axhline(overall, color="k", ls="--", lw=1, label=f"all classes: {overall:.1f}%", zorder=1)
            ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=3, zorder=3,
                         bbox=dict(boxstyle="square,pad=0.15", fc="white", ec="none"))
    n = len(next(iter(evaluations.values())).labels)
    ax.set(title=f"Test accuracy per class ({n:,} test images)", xlabel="class",
           ylabel="test accuracy (%)", ylim=(0, 105))
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
            ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=8,
                    color="white" if fractions[i, j] > 0.5 else "black")
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
        ax.set_title(f"true: {CLASS_NAMES[ev.labels[i]]}\npred: {CLASS_NAMES[p]} ({ev.probs[i, p]:.0%})",
                     fontsize=9)
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
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9,
                 label=f"mean attention weight (uniform: {uniform:.3g})")
    fig.suptitle(title, fontsize=11)
    save(fig, path)


# ---------------------------------------------------------------- report


def setup_section(run: Run) -> list[str]:
    """Folder, times, backend, versions, machine and config of a run."""
    info = run.info
    segments = len(info.get("segments_seconds", []))
    md = [f"- Folder: `{run.folder}`"]
    if "command" in info:
        md.append(f"- Command: `{info['command']}`")
    if "wall_seconds" in info:
        wall = duration(info["wall_seconds"]) + (f" in {segments} segments (resumed)" if segments > 1 else "")
    elif "epoch_seconds" in run.log.columns:
        wall = f"{duration(run.log['epoch_seconds'].sum())}, the sum of the logged epoch times"
    else:
        wall = "n/a"
    md.append(f"- Started {info.get('started', 'n/a')}, finished {info.get('finished', 'n/a (unfinished)')}; "
              f"wall time {wall}")
    md.append(f"- Backend: **{info.get('backend', 'n/a')}**; versions: "
              + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()))
    if machine := info.get("machine"):
        md.append(f"- Machine: {machine.get('cpu_count', '?')} CPU cores, {machine.get('processor', '?')}, "
                  f"{machine.get('platform', '?')}")
    config_rows = [[k, f"`{json.dumps(v)}`"] for k, v in info["config"].items()]
    return md + ["", "### Config", "", markdown_table(["flag", "value"], config_rows), ""]


def results_section(run: Run) -> list[str]:
    """Final and best metrics, and the largest test-accuracy drop."""
    s = summary(run.log)
    rows = [[label, fmt(s[c][0]), f"{fmt(s[c][1])} (epoch {s[c][2]})"] for label, c, fmt in (
        ("train loss", "loss", "{:.4f}".format), ("train accuracy", "accuracy", pct),
        ("test loss", "val_loss", "{:.4f}".format), ("test accuracy", "val_accuracy", pct))]
    final = f"final (epoch {run.log['epoch'].iloc[-1]})"
    md = ["### Results", "", "Epochs are counted from 1, as Keras prints them (CSV `epoch` + 1).", "",
          markdown_table(["metric", final, "best (epoch)"], rows, right=(1, 2)), ""]
    if (drop := largest_drop(run.log)) is not None:
        md += ["Largest test-accuracy drop between consecutive epochs, from epoch 3→4 on: "
               + (f"{drop[0]:.2f} points (epoch {drop[1]}→{drop[1] + 1})." if drop[0] > 0 else "none."), ""]
    return md


def evaluation_section(run: Run, out: Path, prefix: str, single: bool) -> list[str]:
    """Per-class table and the model-based figures (written into `out`), or why they are skipped."""
    ev = run.evaluation
    md = ["### Test-split evaluation", ""]
    if ev is None:
        return md + [f"Skipped ({run.skipped}): no per-class accuracy, confusion matrix, misclassified "
                     "gallery or attention maps for this run.", ""]
    n = len(ev.labels)
    which = "limit_test" if run.info["config"].get("limit_test") else "the whole test split"
    accuracy = np.mean(ev.predicted == ev.labels)
    md += [f"The saved `model.keras` predicted the first {n:,} test images ({which}): {pct(accuracy)} "
           f"correct (the log's final test accuracy: {pct(run.log['val_accuracy'].iloc[-1])}).", "",
           per_class_table(ev), ""]
    if single:
        md += ["![Test accuracy per class](per_class_accuracy.png)", ""]
    of_run = "" if single else f" ({run.name})"
    plot_confusion(ev, f"Confusion matrix on {n:,} test images{of_run}", out / f"{prefix}confusion.png")
    mistakes = int((ev.predicted != ev.labels).sum())
    title = f"The {min(GALLERY_SIZE, mistakes)} most confident of {mistakes:,} mistakes on the test split"
    shown = len(plot_gallery(ev, title + of_run, out / f"{prefix}misclassified.png"))
    md += [f"![Confusion matrix]({prefix}confusion.png)", "",
           f"Misclassified test images ({shown} shown, most confident first; true label, predicted class "
           "and its softmax probability):", "",
           f"![Misclassified test images]({prefix}misclassified.png)", ""]
    if ev.attention:
        plot_attention(ev, f"Mean attention map per Ultimus block over {n:,} test images{of_run}",
                       out / f"{prefix}attention.png")
        md += ["Mean attention map of each Ultimus block (row i: softmax over keys j):", "",
               f"![Attention maps]({prefix}attention.png)", ""]
    return md


def write_report(runs: list[Run], out: Path, command: str) -> None:
    """Write report.md, the charts and copies of each run's log.csv and run.json into `out`."""
    single = len(runs) == 1
    md = [f"# Training report: {', '.join(f'`{r.name}`' for r in runs)}", "",
          f"Generated {datetime.now():%Y-%m-%d %H:%M} by `{command}`.", ""]
    plot_curves(runs, out / "curves.png")
    plot_learning_rate(runs, out / "learning_rate.png")
    evaluated = {r.name: r.evaluation for r in runs if r.evaluation is not None}
    if evaluated:
        plot_per_class(evaluated, out / "per_class_accuracy.png")
    if not single:
        md += ["## Comparison", "", comparison_table(runs), "",
               "![Loss and accuracy per epoch, all runs](curves.png)", "",
               "![Learning rate per epoch, all runs](learning_rate.png)", ""]
        if evaluated:
            md += ["![Test accuracy per class, all runs](per_class_accuracy.png)", ""]
    for run in runs:
        prefix = "" if single else f"{run.name}-"
        md += [f"## Run `{run.name}`", "", *setup_section(run), *results_section(run)]
        if single:
            md += ["![Loss and accuracy per epoch](curves.png)", "",
                   "![Learning rate per epoch](learning_rate.png)", ""]
        md += ["### Model", "", run.model_note, "", model_table(run.model), ""]
        md += evaluation_section(run, out, prefix, single)
        md += ["### Per-epoch log", "", epoch_table(run.log), ""]
        shutil.copyfile(run.folder / CSV_NAME, out / f"{prefix}log.csv")
        shutil.copyfile(run.folder / "run.json", out / f"{prefix}run.json")
    (out / "report.md").write_text("\n".join(md))


def attach_models(runs: list[Run], data: str | None, no_model: bool) -> None:
    """Load each run's saved model and evaluate it on the test split; else build it from the config."""
    for run in runs:
        saved = run.folder / "model.keras"
        if saved.is_file() and not no_model:
            run.model, run.model_note = load_model(saved), f"From the saved `{saved}`."
            continue
        run.skipped = "`--no-model`" if no_model else f"no `model.keras` in `{run.folder}`"
        run.model_note = f"Built from run.json's config ({run.skipped})."
        try:
            run.model = build_model(**model_kwargs(run.info["config"]))
        except (ValueError, TypeError) as e:
            raise ReportError(f"{run.folder / 'run.json'}: config can't build the model ({e})") from None
    to_evaluate = [run for run in runs if not run.skipped]
    if not to_evaluate:
        return
    try:
        _, (x_test, y_test) = load_cifar10(data)
    except DataError as e:
        raise ReportError(f"{e} (or pass --no-model)") from None
    for run in to_evaluate:
        limit = run.info["config"].get("limit_test")
        print(f"Evaluating {run.name} on {len(x_test[:limit]):,} test images")
        run.evaluation = evaluate(run.model, x_test[:limit], y_test[:limit])


# ---------------------------------------------------------------- search folders (tuner/tune.py)

SEARCH_COLUMNS = ("trial_id", "status", "num_blocks", "residual", "best_val_accuracy")
BUDGET = ("algorithm", "epochs", "max_trials", "limit_train", "val_fraction", "seed", "batch_size", "conv_widths")


@dataclass
class Search:
    """A KerasTuner search folder: leaderboard, settings, result and each trial's log (epochs 1-based)."""

    folder: Path
    board: pd.DataFrame
    settings: dict
    result: dict  # {} while the search has not finished
    logs: dict[str, pd.DataFrame]


def read_search(folder: Path) -> Search:
    """Read a search folder written by `tuner/tune.py`; trials without a log.csv (failed) have no curve."""
    ids = {"trial_id": str, "tuner/trial_id": str}  # keep "0003" as it is
    board = read_table(folder / "leaderboard.csv", SEARCH_COLUMNS, ("num_blocks", "best_val_accuracy"),
                       gaps=True, dtype=ids)
    logs = {t: read_log(folder / f"trial_{t}" / CSV_NAME) for t in board["trial_id"]
            if (folder / f"trial_{t}" / CSV_NAME).is_file()}
    result = read_json(folder / "result.json", required=False)
    for key in ("best_trial", "val_accuracy", "test_accuracy", "test_images", "trials_completed"):
        if result and key not in result:
            raise ReportError(f"{folder / 'result.json'}: missing key '{key}'")
    return Search(folder, board, read_json(folder / "search.json"), result, logs)


def trial_label(row: dict) -> str:
    """'0003: 4 blocks, residual on (from 0000)' for a leaderboard row."""
    n, on, parent = int(row["num_blocks"]), str(row["residual"]) == "True", row.get("tuner/trial_id")
    return (f"{row['trial_id']}: {n} block{'s' * (n != 1)}, residual {'on' if on else 'off'}"
            + (f" (from {parent})" if isinstance(parent, str) else ""))


def leaderboard_cell(column: str, value) -> str:
    if pd.isna(value):
        return ""
    if column == "best_val_accuracy":
        return pct(value)
    if isinstance(value, (str, bool, np.bool_)):
        return str(value)
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3g}"


def plot_search_depth(search: Search, path: Path) -> None:
    """Best val accuracy of each trial against its number of Ultimus blocks, by residual on/off."""
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    board = search.board.dropna(subset=["best_val_accuracy"])
    on = board["residual"].astype(str) == "True"  # a column with gaps reads as text
    x = board["num_blocks"] + np.where(on, -0.08, 0.08)  # side by side, not on top of each other
    y = 100 * board["best_val_accuracy"]
    ax.scatter(x[on], y[on], marker="o", s=40, alpha=0.8, color="C0", label="residual on")
    ax.scatter(x[~on], y[~on], marker="s", s=40, alpha=0.8, color="C1", label="residual off")
    if "best_trial" in search.result:
        best = board["trial_id"] == search.result["best_trial"]
        ax.scatter(x[best], y[best], marker="*", s=300, facecolor="none", edgecolor="k",
                   label=f"best: trial {search.result['best_trial']}")
    ax.set(title="Best validation accuracy of each trial vs depth", xlabel="number of Ultimus blocks",
           ylabel="best validation accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, path)


def plot_search_curves(search: Search, path: Path) -> None:
    """Validation accuracy per epoch of every trial, overlaid (Hyperband continuations start later)."""
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    rows = [r for r in search.board.to_dict("records") if r["trial_id"] in search.logs]
    for i, row in enumerate(rows):
        log, best = search.logs[row["trial_id"]], row["trial_id"] == search.result.get("best_trial")
        # colour, line style and marker together tell 150 trials apart
        ax.plot(log["epoch"], 100 * log["val_accuracy"], color=f"C{i % 10}", ls=("-", "--", ":")[i // 10 % 3],
                marker="osv^D"[(i + i // 30) % 5], ms=7 if best else 4, lw=2.5 if best else 1.2,
                zorder=3 if best else 2, label=trial_label(row) + " (best)" * best)
    ax.set(title="Validation accuracy per epoch, all trials", xlabel="epoch", ylabel="validation accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=math.ceil(len(rows) / 25) or 1,
              title="trial (leaderboard order)", title_fontsize=8)
    save(fig, path)


def write_search_report(search: Search, out: Path, command: str) -> None:
    """Write report.md, the two search charts and copies of the search's files into `out`."""
    result, board = search.result, search.board
    budget, note = {**search.settings, **result.get("settings", {})}, ""
    if "command" not in budget:
        flags = [f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
                 for k, v in budget.items() if k in BUDGET and v is not None]
        budget["command"] = f"python tuner/tune.py --out {search.folder} {' '.join(flags)}"
        note = "not recorded in search.json; from its settings (`--data` unknown) it was the equivalent of "
    md = [f"# Search report: `{search.folder.resolve().name}`", "",
          f"Generated {datetime.now():%Y-%m-%d %H:%M} by `{command}`.", "", "## Search", "",
          f"- Folder: `{search.folder}`", f"- Command: {note}`{budget['command']}`", "",
          markdown_table(["setting", "value"], [[k, "not set (default)" if budget.get(k) is None
                                                  else f"`{json.dumps(budget[k])}`"] for k in BUDGET]), "",
          "## Result", ""]
    if result:
        md += [f"- Best trial **{result['best_trial']}**: validation accuracy **{pct(result['val_accuracy'])}** "
               "(the objective, on a seeded split of the training images)",
               f"- Its model's test accuracy, measured once at the end: **{pct(result['test_accuracy'])}** on "
               f"{result['test_images']:,} official test images",
               f"- Trials completed: {result['trials_completed']} of {len(board)} in the leaderboard",
               f"- Train it in full: `python -m keras_ultimus.train --config {search.folder / 'best.json'}`", ""]
    else:
        md += ["No result.json: the search has not finished.", ""]
    numeric = tuple(i for i, c in enumerate(board.columns)
                    if pd.api.types.is_numeric_dtype(board[c]) and not pd.api.types.is_bool_dtype(board[c]))
    rows = [[leaderboard_cell(c, v) for c, v in row.items()] for row in board.to_dict("records")]
    plot_search_depth(search, out / "search_depth.png")
    plot_search_curves(search, out / "search_curves.png")
    md += ["## Leaderboard", "", "Best validation accuracy first, one row per trial.", "",
           markdown_table(list(board.columns), rows, right=numeric), "",
           "![Best validation accuracy vs number of Ultimus blocks](search_depth.png)", "",
           "![Validation accuracy per epoch, all trials](search_curves.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    for name in ("leaderboard.csv", "search.json", "result.json", "best.json"):
        if (search.folder / name).is_file():
            shutil.copyfile(search.folder / name, out / name)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, read the runs, evaluate their models and write the report folder."""
    parser = argparse.ArgumentParser(prog="python -m keras_ultimus.report",
                                     description=__doc__.split(":")[0] + ".")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) holding log.csv and run.json, "
                        "or one search folder of tuner/tune.py (holding leaderboard.csv)")
    parser.add_argument("--out", required=True, help="report folder to write (e.g. reports/NAME)")
    parser.add_argument("--data", help="local CIFAR-10 copy for the test-split figures "
                        "(default: $CIFAR10_PATH, else TFDS)")
    parser.add_argument("--no-model", action="store_true",
                        help="don't load model.keras: skip the test-split figures (no data needed)")
    args = parser.parse_args(argv)
    command = "python -m keras_ultimus.report " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    try:
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.md").exists())):
            raise ReportError(f"{out}: exists and is not a report folder; pick another --out")
        folders = [Path(r) for r in args.runs]
        if any((f / "leaderboard.csv").is_file() for f in folders):
            if len(folders) > 1:
                raise ReportError("a search folder (with leaderboard.csv) is reported on its own")
            write = partial(write_search_report, read_search(folders[0]))
        else:
            runs = [read_run(f, n) for f, n in zip(folders, run_names(folders))]
            attach_models(runs, args.data, args.no_model)
            write = partial(write_report, runs)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Build everything in a scratch folder beside `out`, then move it in: no half-written report.
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write(scratch, command)
        out.mkdir(exist_ok=True)
        for f in scratch.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"Report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

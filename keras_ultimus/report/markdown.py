"""Write a run report's Markdown: setup, results, model, test-split evaluation and per-epoch log."""

import json
import os
import shlex
import shutil
from datetime import datetime
from pathlib import Path

from keras_ultimus.config import model_kwargs
from keras_ultimus.errors import UserError
from keras_ultimus.models import ultimus as model
from keras_ultimus.report import charts
from keras_ultimus.report.predictions import Evaluation
from keras_ultimus.report.runs import Run
from keras_ultimus.report.tables import (
    comparison_table,
    duration,
    epoch_table,
    largest_drop,
    markdown_table,
    model_table,
    pct,
    per_class_table,
    summary,
)
from keras_ultimus.runs.folder import CSV_NAME, INFO_NAME, MODEL_NAME


def shown_path(path: str | os.PathLike) -> str:
    """`path` as a report shows it: relative to the working folder (the repo), never absolute."""
    return Path(os.path.relpath(Path(path).absolute())).as_posix()


def portable_command(command: str) -> str:
    """A shell command with every absolute path in it (`/x` or `--flag=/x`) made relative, as `shown_path`."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: leave it as it was recorded
        return command
    for i, word in enumerate(words):
        flag, eq, value = word.rpartition("=") if word.startswith("-") else ("", "", word)
        if os.path.isabs(value):
            words[i] = flag + eq + shown_path(value)
    return shlex.join(words)


def portable(value):
    """A run.json value with absolute paths made relative: in `command` strings and in path values."""
    if isinstance(value, dict):
        return {
            k: portable_command(v) if k == "command" and isinstance(v, str) else portable(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return shown_path(value)
    return value


def trainable_params(run: Run) -> int:
    """The run's trainable parameter count, from its config, as the tuner's budget counts it."""
    try:
        return model.trainable_params(**model_kwargs(run.info["config"]))
    except (ValueError, TypeError) as e:
        raise UserError(
            f"{run.folder / INFO_NAME}: config doesn't describe a model ({e})"
        ) from None


def setup_section(run: Run) -> list[str]:
    """Folder, times, backend, versions, machine and config of a run."""
    info = run.info
    segments = len(info.get("segments_seconds", []))
    md = [f"- Folder: `{shown_path(run.folder)}`"]
    if "command" in info:
        md.append(f"- Command: `{portable_command(info['command'])}`")
    if "wall_seconds" in info:
        wall = duration(info["wall_seconds"]) + (
            f" in {segments} segments (resumed)" if segments > 1 else ""
        )
    elif "epoch_seconds" in run.log.columns:
        wall = f"{duration(run.log['epoch_seconds'].sum())}, the sum of the logged epoch times"
    else:
        wall = "n/a"
    md.append(
        f"- Started {info.get('started', 'n/a')}, finished {info.get('finished', 'n/a (unfinished)')}; "
        f"wall time {wall}"
    )
    md.append(
        f"- Backend: **{info.get('backend', 'n/a')}**; versions: "
        + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    )
    if machine := info.get("machine"):
        md.append(
            f"- Machine: {machine.get('cpu_count', '?')} CPU cores, {machine.get('processor', '?')}, "
            f"{machine.get('platform', '?')}"
        )
    config_rows = [[k, f"`{json.dumps(portable(v))}`"] for k, v in info["config"].items()]
    return md + ["", "### Config", "", markdown_table(["flag", "value"], config_rows), ""]


def results_section(run: Run) -> list[str]:
    """Final and best metrics, and the largest test-accuracy drop."""
    s = summary(run.log)
    rows = [
        [label, fmt(s[c][0]), f"{fmt(s[c][1])} (epoch {s[c][2]})"]
        for label, c, fmt in (
            ("train loss", "loss", "{:.4f}".format),
            ("train accuracy", "accuracy", pct),
            ("test loss", "val_loss", "{:.4f}".format),
            ("test accuracy", "val_accuracy", pct),
        )
    ]
    final = f"final (epoch {run.log['epoch'].iloc[-1]})"
    md = [
        "### Results",
        "",
        "Epochs are counted from 1, as Keras prints them (CSV `epoch` + 1).",
        "",
        markdown_table(["metric", final, "best (epoch)"], rows, right=(1, 2)),
        "",
    ]
    if (drop := largest_drop(run.log)) is not None:
        md += [
            "Largest test-accuracy drop between consecutive epochs, from epoch 3→4 on: "
            + (
                f"{drop[0]:.2f} points (epoch {drop[1]}→{drop[1] + 1})." if drop[0] > 0 else "none."
            ),
            "",
        ]
    return md


# What `slim` leaves out: the heaviest charts, which `report` redraws from the copied model.keras.
SLIM_NOTE = (
    "The confusion matrix and the gallery of misclassified test images are left out of this copy, as is "
    "the learning-rate chart (`report --slim`, to keep committed reports small; the per-epoch table lists "
    "the LR); `python -m keras_ultimus.report` without `--slim` draws them from `{model}`."
)


def evaluation_section(
    run: Run, out: Path, prefix: str, single: bool, slim: bool = False
) -> list[str]:
    """Per-class table and the model-based figures (written into `out`), or why they are skipped."""
    ev = run.evaluation
    md = ["### Test-split evaluation", ""]
    if ev is None:
        return md + [
            f"Skipped ({run.skipped}): no per-class accuracy, confusion matrix, misclassified "
            "gallery or attention maps for this run.",
            "",
        ]
    n = len(ev.labels)
    which = "limit_test" if run.info["config"].get("limit_test") else "the whole test split"
    md += [
        f"The saved `model.keras` predicted the first {n:,} test images ({which}): {pct(ev.accuracy)} "
        f"correct (the log's final test accuracy: {pct(run.log['val_accuracy'].iloc[-1])}).",
        "",
        per_class_table(ev),
        "",
    ]
    if single:
        md += ["![Test accuracy per class](per_class_accuracy.png)", ""]
    of_run = "" if single else f" ({run.name})"
    if slim:
        md += [SLIM_NOTE.format(model=f"{prefix}{MODEL_NAME}"), ""]
    else:
        md += model_charts(ev, out, prefix, of_run)
    if ev.attention:
        charts.plot_attention(
            ev,
            f"Mean attention map per Ultimus block over {n:,} test images{of_run}",
            out / f"{prefix}attention.png",
        )
        md += [
            "Mean attention map of each Ultimus block (row i: softmax over keys j):",
            "",
            f"![Attention maps]({prefix}attention.png)",
            "",
        ]
    return md


def model_charts(ev: Evaluation, out: Path, prefix: str, of_run: str) -> list[str]:
    """Draw the confusion matrix and the gallery of the most confident mistakes; return their Markdown."""
    n = len(ev.labels)
    charts.plot_confusion(
        ev, f"Confusion matrix on {n:,} test images{of_run}", out / f"{prefix}confusion.png"
    )
    mistakes = int((ev.predicted != ev.labels).sum())
    title = f"The {min(charts.GALLERY_SIZE, mistakes)} most confident of {mistakes:,} mistakes on the test split"
    shown = len(charts.plot_gallery(ev, title + of_run, out / f"{prefix}misclassified.png"))
    return [
        f"![Confusion matrix]({prefix}confusion.png)",
        "",
        f"Misclassified test images ({shown} shown, most confident first; true label, predicted class "
        "and its softmax probability):",
        "",
        f"![Misclassified test images]({prefix}misclassified.png)",
        "",
    ]


def write_report(runs: list[Run], out: Path, command: str, slim: bool = False) -> None:
    """Write report.md, the charts and copies of each run's log.csv, run.json and model.keras into `out`.

    `slim` leaves out the learning-rate chart (the per-epoch table lists the LR) and each run's confusion matrix
    and misclassified gallery, the heaviest PNGs.
    """
    single = len(runs) == 1
    md = [
        f"# Training report: {', '.join(f'`{r.name}`' for r in runs)}",
        "",
        f"Generated {datetime.now():%Y-%m-%d %H:%M} by `{portable_command(command)}`.",
        "",
    ]
    charts.plot_curves(runs, out / "curves.png")
    lr_chart = [] if slim else ["![Learning rate per epoch{}](learning_rate.png)", ""]
    if not slim:
        charts.plot_learning_rate(runs, out / "learning_rate.png")
    evaluated = {r.name: r.evaluation for r in runs if r.evaluation is not None}
    if evaluated:
        charts.plot_per_class(evaluated, out / "per_class_accuracy.png")
    if not single:
        md += [
            "## Comparison",
            "",
            comparison_table(runs),
            "",
            "![Loss and accuracy per epoch, all runs](curves.png)",
            "",
            *(line.format(", all runs") for line in lr_chart),
        ]
        if evaluated:
            md += ["![Test accuracy per class, all runs](per_class_accuracy.png)", ""]
    for run in runs:
        prefix = "" if single else f"{run.name}-"
        md += [f"## Run `{run.name}`", "", *setup_section(run), *results_section(run)]
        if single:
            md += [
                "![Loss and accuracy per epoch](curves.png)",
                "",
                *(line.format("") for line in lr_chart),
            ]
        md += [
            "### Model",
            "",
            run.model_note,
            "",
            model_table(run.model, trainable_params(run)),
            "",
        ]
        md += evaluation_section(run, out, prefix, single, slim)
        md += ["### Per-epoch log", "", epoch_table(run.log), ""]
        shutil.copyfile(run.folder / CSV_NAME, out / f"{prefix}{CSV_NAME}")
        (out / f"{prefix}{INFO_NAME}").write_text(json.dumps(portable(run.info), indent=2) + "\n")
        if (
            run.folder / MODEL_NAME
        ).is_file():  # so `report --evaluate` can re-check the committed model
            shutil.copyfile(run.folder / MODEL_NAME, out / f"{prefix}{MODEL_NAME}")
    (out / "report.md").write_text("\n".join(md))

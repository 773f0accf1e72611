"""The GPU driver's search and confirm stages: Hyperband, then its top configurations and the depth chart."""

import csv
import json
from pathlib import Path

from benchmarks import runner
from benchmarks.experiments import PIPELINE, SEARCH_COLUMNS, confirm_name, confirm_runs
from benchmarks.results import accuracy, run_info, seed_lines, split, splits
from benchmarks.runner import Session, say, summary

DEPTH_COLUMNS = ["blocks", "residual", "run", "trainable_params", "epochs"]
# depth.csv: one of these per row, by the split that scored the run; "test_accuracy" was its only column before.
ACCURACY_COLUMNS = {"test": "test_accuracy", "held-out": "held_out_accuracy"}


def stage_search(s: Session) -> None:
    """Hyperband (with --jobs > 1 a KerasTuner chief and N workers); its result and top 10 trials."""
    folder = s.work / "search"
    if (folder / "result.json").is_file():
        say(s, "search: finished on an earlier call, kept")
    else:
        flags = ["--data", str(s.data), "--out", str(folder), "--algorithm", "hyperband"]
        flags += ["--epochs", str(s.search_epochs), "--seed", "0", "--pipeline", PIPELINE]
        flags += ["--space", s.args.space]
        flags += ["--limit-train", "64", "--batch-size", "16"] if s.dry_run else []
        command = (
            ["-m", "keras_ultimus.tuner.launch", "--workers", str(s.jobs)]
            if s.jobs > 1
            else ["-m", "keras_ultimus.tuner.tune"]
        )
        say(s, f"search: python {' '.join(command + flags)} (resumes its folder)")
        if runner.run_limited(s, "search", command + flags) == "ok":
            say(s, "search: done")
    if not (folder / "result.json").is_file():
        return
    import pandas as pd

    board = pd.read_csv(folder / "leaderboard.csv", dtype={"trial_id": str})
    done = board[board["status"] == "COMPLETED"]
    result = json.dumps(json.loads((folder / "result.json").read_text()))
    table = done[[c for c in SEARCH_COLUMNS if c in done]].head(10).to_string(index=False)
    summary(s, "search", [result, table])


def top_configs(search: Path, n: int = 3) -> list[dict]:
    """The search's `n` best distinct configurations as train --config values: best.json, then completed trials.

    Hyperband trains one configuration at several budgets, hence distinct; the leaderboard is best first.
    """
    from keras_ultimus.tuner.leaderboard import best_config

    best = json.loads((search / "best.json").read_text())
    with open(search / "leaderboard.csv") as f:
        rows = [
            r for r in csv.DictReader(f) if r["status"] == "COMPLETED" and r["best_val_accuracy"]
        ]
    rows.sort(key=lambda r: -float(r["best_val_accuracy"]))
    chosen = [best]
    for row in rows:
        trial = json.loads((search / f"trial_{row['trial_id']}" / "trial.json").read_text())
        config = best_config(
            trial["hyperparameters"]["values"], best
        )  # best.json: search settings too
        if config not in chosen:
            chosen.append(config)
    return chosen[:n]


def stage_confirm(s: Session) -> None:
    """The top 3 configurations at 24 epochs scored on the test split (flip TTA beside), each at --seeds seeds,
    and the best one at every --depths with the residual on and off (seed 0)."""
    search, folder = s.work / "search", s.work / "confirm"
    if not (search / "best.json").is_file() or not (search / "leaderboard.csv").is_file():
        say(s, f"confirm: no finished search in {search} (run the search stage first); skipped")
        s.failed.append("confirm (no search)")
        return
    configs, runs, depth_runs = confirm_runs(top_configs(search), s.depths, s.seeds)
    runner.train_all(s, runs, configs, folder)

    from keras_ultimus.config import model_kwargs
    from keras_ultimus.models.ultimus import trainable_params

    top = {name: c for name, c in configs.items() if name.startswith("top")}
    scored = splits([s.work / run.name for run in runs])
    lines = [f"confirmations (scored on the {scored} split):"]
    for k, (name, config) in enumerate(top.items(), 1):
        shown = " ".join(
            f"{key}={v}" for key, v in config.items() if key not in ("batch_size", "seed")
        )
        lines.append(f"  {name}: {trainable_params(**model_kwargs(config)):,} params; {shown}")
        folders = {seed: s.work / confirm_name(k, seed) for seed in s.seeds}
        lines += ["    " + line for line in seed_lines(folders)]
    rows = depth_rows(s.work, depth_runs)
    for row in rows:
        residual, score = "on" if row["residual"] else "off", row_accuracy(row)
        result = f"{100 * float(score):.2f}%" if score else "not finished"
        on = " held-out" if row[ACCURACY_COLUMNS["held-out"]] else ""
        lines.append(f"  depth {row['blocks']}, residual {residual}:{on} {result} ({row['run']})")
    write_depth(rows, folder)
    summary(s, "confirm", lines)


def depth_rows(work: Path, depth_runs: dict[tuple[int, bool], str]) -> list[dict]:
    """depth.csv's rows: each depth run's size, epochs and final accuracy, in the column of its split."""
    from keras_ultimus.config import model_kwargs
    from keras_ultimus.models.ultimus import trainable_params

    rows = []
    for (d, residual), name in depth_runs.items():
        info, acc = run_info(work / name), accuracy(work / name)
        row = dict.fromkeys([*DEPTH_COLUMNS, *ACCURACY_COLUMNS.values()], "")
        row |= {"blocks": d, "residual": residual, "run": name}
        if acc is not None:
            row["trainable_params"] = trainable_params(**model_kwargs(info["config"]))
            row["epochs"] = info["config"]["epochs"]
            row[ACCURACY_COLUMNS[split(work / name)]] = f"{acc:.4f}"
        rows.append(row)
    return rows


def row_accuracy(row: dict) -> str:
    """A depth.csv row's accuracy, whichever split scored it ("" when the run did not finish)."""
    return next((row[c] for c in ACCURACY_COLUMNS.values() if row.get(c)), "")


def write_depth(rows: list[dict], folder: Path) -> None:
    """depth.csv, and depth.png of the finished rows: accuracy against blocks, residual on and off."""
    from keras_ultimus.report.search_charts import plot_test_depth

    with open(folder / "depth.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = [r for r in rows if row_accuracy(r)]
    if not done:
        return
    series = {}
    for residual in (False, True):
        points = [r for r in done if r["residual"] == residual]
        if points:
            series[f"residual {'on' if residual else 'off'}"] = (
                [r["blocks"] for r in points],
                [float(row_accuracy(r)) for r in points],
            )
    held_out = any(r[ACCURACY_COLUMNS["held-out"]] for r in done)
    split_name = "held-out" if held_out else "test"
    plot_test_depth(series, done[0]["epochs"], folder / "depth.png", split_name)

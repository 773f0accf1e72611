"""The GPU driver's stages up to the ablation: each trains its runs from `benchmarks.experiments`, then sums up.

A figure is named after the split that scored it (`benchmarks.results.split`): "test", or "held-out" when the
data's test split was carved from the training files.
"""

import json
import shutil
import statistics

from benchmarks import runner
from benchmarks.experiments import (
    ARMS,
    ATTENTIONS,
    BENCH_FLAGS,
    BEST_VARIANT,
    BF16,
    DEFAULT_SEEDS,
    PIPELINE,
    PRECISIONS,
    RECIPE,
    RECIPE_SEEDS,
    REPRO,
    SEEDS,
    TIMED,
    ablation_runs,
)
from benchmarks.original import PUBLISHED_TEST_ACCURACY, TRAIN_FLAGS
from benchmarks.results import accuracy, final_scores, run_info, seed_lines, split, splits
from benchmarks.runner import Session, say, summary


def stage_bench(s: Session) -> None:
    """The bench on torch and jax: synthetic data, so it needs no data and runs while the parts arrive."""
    folder = s.work / "bench"
    if (folder / "bench.json").is_file():
        return say(s, "bench: done on an earlier call, kept")
    shutil.rmtree(folder, ignore_errors=True)
    flags = BENCH_FLAGS["dry run" if s.dry_run else "gpu"].split()
    command = ["-m", "keras_ultimus.bench", "--backends", "torch,jax", "--pipeline", PIPELINE]
    command += [*flags, "--out", str(folder)]
    say(s, f"bench: python {' '.join(command)}")
    outcome = runner.run_limited(s, "bench", command)
    if outcome == "ok":
        summary(s, "bench", [(folder / "bench.md").read_text()])
    elif outcome == "late":  # the bench does not resume: it starts over next call
        shutil.rmtree(folder, ignore_errors=True)


def stage_train(s: Session) -> None:
    """The timed runs, one at a time (alone on the GPU)."""
    lines = []
    for run in TIMED:
        folder = s.work / run.name
        runner.train_run(s, run.name, run.backend, runner.run_flags(s, run, {}))
        seconds = folder / "seconds.txt"
        timed = (
            f"{seconds.read_text().strip()} s from start until the run folder was written"
            if seconds.is_file()
            else "? s (resumed: not timed)"
        )
        acc = accuracy(folder)
        result = (
            f"{split(folder)} accuracy {acc:.4f}, {timed}" if acc is not None else "not finished"
        )
        lines.append(f"{run.backend}: {result}")
    summary(s, "train", lines)


def stage_bf16(s: Session) -> None:
    """Seed 0 for 8 epochs in float32 and in mixed_bfloat16: both final accuracies and their difference."""
    runner.train_all(s, BF16)
    folders = {p: s.work / f"bf16-{p}" for p in PRECISIONS}
    acc, lines = {p: accuracy(f) for p, f in folders.items()}, []
    for p, folder in folders.items():
        epochs = run_info(folder).get("config", {}).get("epochs", "?")
        lines.append(
            f"{p}: seed 0, {epochs} epochs, final {split(folder)} accuracy "
            + (f"{100 * acc[p]:.2f}%" if acc[p] is not None else "not finished")
        )
    if None not in acc.values():
        d = 100 * (acc["mixed_bfloat16"] - acc["float32"])
        within = "within" if abs(d) <= 1 else "NOT within"
        lines.append(f"difference (bf16 - fp32): {d:+.2f} points ({within} 1 point)")
    summary(s, "bf16", lines)


def stage_seeds(s: Session) -> None:
    """The default with seeds 0, 1, 2; seed 0 is the train stage's torch run when that finished."""
    folders = {seed: s.work / run.name for seed, run in zip(SEEDS, DEFAULT_SEEDS)}
    runs = list(DEFAULT_SEEDS)
    if accuracy(s.work / "train-torch") is not None:
        say(s, "seed-0: the train stage's train-torch, kept")
        folders[0], runs = s.work / "train-torch", runs[1:]
    runner.train_all(s, runs)
    summary(s, "seeds", seed_lines(folders))


def stage_recipe(s: Session) -> None:
    """The reference model on the candidate recipe RECIPE, seeds 0, 1, 2 (the faithful default's target: 72%)."""
    runner.train_all(s, RECIPE_SEEDS)
    folders = {seed: s.work / run.name for seed, run in zip(SEEDS, RECIPE_SEEDS)}
    summary(s, "recipe", [f"the reference model with {' '.join(RECIPE)}:", *seed_lines(folders)])


def stage_repro(s: Session) -> None:
    """The original's schedule with each attention reading (seed 0), and their curves beside its log."""
    runner.train_all(s, REPRO)
    from keras_ultimus.report.runs import read_log
    from keras_ultimus.report.search_charts import plot_reproduction

    folders = {a: s.work / run.name for a, run in zip(ATTENTIONS, REPRO)}
    done = {a: f for a, f in folders.items() if accuracy(f) is not None}
    logs = {a: read_log(f / "log.csv") for a, f in done.items()}  # epochs from 1
    lines = [
        f"the original's schedule ({' '.join(TRAIN_FLAGS)}); its log (test): "
        + ", ".join(f"{100 * v:.2f}% after epoch {e}" for e, v in PUBLISHED_TEST_ACCURACY.items())
    ]
    for a in ATTENTIONS:
        if a not in logs:
            lines.append(f"--attention {a}: not finished")
            continue
        scores = dict(zip(logs[a]["epoch"], logs[a]["val_accuracy"]))
        on = " (held-out)" if split(folders[a]) == "held-out" else ""
        lines.append(
            f"--attention {a}{on}: "
            + ", ".join(
                f"{100 * scores[e]:.2f}% after epoch {e}"
                for e in PUBLISHED_TEST_ACCURACY
                if e in scores
            )
        )
    if logs:
        (s.work / "repro").mkdir(exist_ok=True)
        curves = {f"--attention {a}": log for a, log in logs.items()}
        chart = s.work / "repro" / "repro.png"
        plot_reproduction(curves, PUBLISHED_TEST_ACCURACY, chart, splits(list(done.values())))
    summary(s, "repro", lines)


def stage_ablation(s: Session) -> None:
    """The best variant with one option changed per arm, at --seeds seeds; each arm's mean against the base's."""
    configs, runs = ablation_runs(s.seeds)
    runner.train_all(s, runs, configs, s.work / "ablation")
    lines, means = [f"the best variant: {json.dumps(BEST_VARIANT)}"], {}
    for arm, change in ARMS.items():
        folders = {seed: s.work / f"ablation-{arm}-s{seed}" for seed in s.seeds}
        lines += [f"{arm} {json.dumps(change)}:"] + ["  " + line for line in seed_lines(folders)]
        scores = final_scores(folders)
        if scores["plain"]:
            means[arm] = [
                statistics.mean(scores[k]) if scores[k] else float("nan")
                for k in ("plain", "flip TTA")
            ]
    if "base" in means:
        lines.append("each arm's mean against the base's (points, plain / flip TTA):")
        lines += [
            f"  {arm}: {100 * (m[0] - means['base'][0]):+.2f} / {100 * (m[1] - means['base'][1]):+.2f}"
            for arm, m in means.items()
            if arm != "base"
        ]
    summary(s, "ablation", lines)

"""The speed and accuracy work on a GPU machine (PyTorch and JAX, no TensorFlow or network): `python -m benchmarks.gpu`.

Stages, run in the order given: bench (keras_ultimus.bench on torch and jax), train (the 24-epoch default on torch
and jax, each alone and timed), bf16 (seed 0, 8 epochs, float32 against mixed_bfloat16), seeds (seeds 0, 1, 2),
recipe (the reference model on the candidate recipe RECIPE, seeds 0, 1, 2), repro (the PyTorch original's schedule
with each --attention reading, 24 epochs, charted beside its log), ablation (the best variant, BEST_VARIANT, with
one recipe or model option changed per arm, at --seeds seeds), search (Hyperband over --space on the 45,000 /
5,000 split), confirm (the search's top 3 configurations at 24 epochs on the test set with flip TTA, each at
--seeds seeds, and the best one at every --depths with the residual on and off).
$ULTIMUS_GPU_STATE (default /tmp/keras-ultimus-gpu) keeps the data and the run folders between the calls of a
session; every stage resumes (a finished run folder is kept, a partial one --resume'd, a search resumed by
KerasTuner). .gpu-carry/ (an earlier session's run folders) is merged into --work, .whl/ installed into /tmp/site
when Keras is missing, .data-parts/ reassembled and md5-checked. After every stage the results are packed into
--out: gpu-results.tar.gz (no backups, TensorBoard logs or checkpoints), gpu-models-extra.tar.gz (models over the
first 15 MiB), summary.txt, steps.txt, versions.txt, data.txt.
How to prepare and which device calls to make: DEVELOPERS.md ("GPU runs").
"""

import argparse
import concurrent.futures
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/gpu.py`
    sys.path.insert(0, str(ROOT))

from benchmarks.original import PUBLISHED_TEST_ACCURACY, TRAIN_FLAGS  # noqa: E402
from keras_ultimus.constants import SPACES  # noqa: E402
from keras_ultimus.datasets.fake_data import write_fake_tarball  # noqa: E402
from keras_ultimus.errors import ArgumentParser, UserError, cli  # noqa: E402
from keras_ultimus.runs.folder import INFO_NAME  # noqa: E402

STAGES = ("bench", "train", "bf16", "seeds", "recipe", "repro", "ablation", "search", "confirm")
RECIPE = [
    "--batch-size",
    "256",
    "--max-lr",
    "0.002",
]  # the faithful model's candidate recipe (71.61% on seed 0, CPU)
# The best variant so far (reports/whiten-bs256-cpu/) as a train --config, and the ablation's arms: one change each.
BEST_VARIANT = {
    "stem": "resnet",
    "conv_widths": [32, 64, 64],
    "num_blocks": 1,
    "key_dim": 16,
    "pooling": "max",
    "whiten": True,
    "max_lr": 0.004,
    "batch_size": 256,
    "label_smoothing": 0.1,
    "tta": "flip",
}
ARMS = {
    "base": {},
    "no-whiten": {"whiten": False},
    "avg-pooling": {"pooling": "avg"},
    "batch-512": {"batch_size": 512},
    "no-label-smoothing": {"label_smoothing": 0.0},
    "weight-decay": {"weight_decay": 0.04},
    "ema": {"ema": 0.99},
    "sgd": {"optimizer": "sgd", "max_lr": 0.1},
}  # SGD's peak LR is a guess, not tuned
ATTENTIONS = (
    "sample",
    "batch",
    "elementwise",
)  # keras_ultimus.models.layers' readings (tested), without Keras
PIPELINE = "device"  # the uint8 training set on the GPU, each batch cropped and flipped there
GRACE = 30  # no run starts this close to the time limit; an interrupted one gets this long to stop
NO_TENSORFLOW = (
    ROOT / "tests" / "no_tensorflow"
)  # a `tensorflow` that fails to import, as on the GPU machine
SITE = Path("/tmp/site")  # where the wheels of .whl/ are installed
LIMIT = 15 * 2**20  # one archive's content, under the 16 MiB a file may be when it comes back
LOG_TAIL = 100_000  # a log's last bytes: Keras' progress bars make a 24-epoch log a few hundred kB
KEEP = {".csv", ".json", ".md", ".png", ".txt", ".log", ".keras"}
SKIP_DIRS = {"backup", "tensorboard", "dry-run-data", "lr_find_scratch"}
TARBALL_MD5 = "8a7d4dca7a6b931d53ebf9c593972fdc"  # the project's tarball (see the data's SOURCE.md)
OFFICIAL_MD5 = {  # official per-file md5s of the binary release
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25", "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421", "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d", "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}  # fmt: skip


class Session:
    """One call's settings and state: folders, deadline, the children running, what went wrong."""

    def __init__(self, args) -> None:
        self.args, self.dry_run, self.jobs = args, args.dry_run, args.jobs
        self.out = Path(
            args.out or os.environ.get("OUT") or f"runs/gpu-{datetime.now():%Y%m%d-%H%M%S}"
        ).resolve()
        state = Path(os.environ.get("ULTIMUS_GPU_STATE", "/tmp/keras-ultimus-gpu"))
        default_work = (
            Path(f"{self.out}.work") if self.dry_run else state / "runs"
        )  # the dry run leaves state alone
        self.work = Path(args.work or default_work).resolve()
        self.cache = self.work / "dry-run-data" if self.dry_run else state / "data"
        self.deadline = time.time() + args.time_limit if args.time_limit else float("inf")
        self.depths = args.depths or ([1, 2] if self.dry_run else [1, 2, 3, 4])
        self.search_epochs = 2 if self.dry_run else args.search_epochs
        self.seeds = list(range(args.seeds))
        self.tiny = (
            ["--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "16"]
            if self.dry_run
            else []
        )
        self.threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
        self.data: Path | None = None
        self.failed: list[str] = []
        self.running: set[subprocess.Popen] = set()
        self.stopping = False
        if os.environ.get("KERAS_BACKEND") not in (
            "torch",
            "jax",
        ):  # no TensorFlow on the GPU machine or dry run
            os.environ["KERAS_BACKEND"] = "torch"
        paths = [str(NO_TENSORFLOW)] * self.dry_run + [str(ROOT), os.environ.get("PYTHONPATH", "")]
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        }
        for folder in (self.out, self.work / "logs", self.work / "summary"):
            folder.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        """Seconds until the time limit."""
        return self.deadline - time.time()


def say(s: Session, message: str) -> None:
    """A progress line on stderr and in steps.txt (of --out and of --work)."""
    line = f"[gpu {datetime.now():%H:%M:%S}] {message}"
    print(line, file=sys.stderr, flush=True)
    for folder in (s.out, s.work):
        with open(folder / "steps.txt", "a") as f:
            f.write(line + "\n")


def run_info(folder: Path) -> dict:
    """A run folder's run.json, or {} without one."""
    path = folder / INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def accuracy(folder: Path) -> float | None:
    """A finished run's last-epoch test accuracy (train validates on the test split), else None."""
    info = run_info(folder)
    return info["final"]["val_accuracy"] if "finished" in info else None


def run_limited(s: Session, name: str, command: list[str], backend: str = "torch") -> str:
    """Run `python COMMAND` (log in logs/NAME.log) unless the limit is near; interrupt it at the limit.

    Returns "ok", "late" (not started, or interrupted: it resumes next call) or "failed"; says and records the last two.
    """
    if s.stopping or s.left() < GRACE:
        say(s, f"{name}: not started, the time limit is reached (rerun the same command to go on)")
        s.failed.append(f"{name} (time limit)")
        return "late"
    env = {**s.env, "KERAS_BACKEND": backend} | (
        {"OMP_NUM_THREADS": s.threads} if s.jobs > 1 else {}
    )
    log, start = s.work / "logs" / f"{name}.log", time.time()
    with open(
        log, "ab"
    ) as f:  # its own process group: an interrupt reaches the search's workers too
        proc = subprocess.Popen(
            [sys.executable, *command],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    s.running.add(proc)
    try:
        code = proc.wait(timeout=None if s.left() == float("inf") else max(s.left(), 0))
    except subprocess.TimeoutExpired:
        code = interrupt(proc)
    finally:
        s.running.discard(proc)
    if code == 0:
        return "ok"
    if s.stopping or s.left() <= 0:
        say(
            s,
            f"{name}: interrupted at the time limit after {time.time() - start:.0f} s (it resumes on the next call)",
        )
        s.failed.append(f"{name} (time limit)")
        return "late"
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    say(s, f"{name}: FAILED (exit {code}): {tail[0]}")
    s.failed.append(f"{name} (exit {code})")
    return "failed"


def interrupt(proc: subprocess.Popen) -> int:
    """Ctrl-C a child's process group (runs stop resumable); kill it if it has not stopped within GRACE s."""
    signal_group(proc, signal.SIGINT)
    try:
        return proc.wait(GRACE)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        return proc.wait()


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send `sig` to a child's process group, if it is still there."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def train_run(s: Session, name: str, backend: str, flags: list[str]) -> None:
    """Train into work/NAME, or keep it if finished, or --resume it if partial; time a run trained whole."""
    folder = s.work / name
    if accuracy(folder) is not None:
        say(s, f"{name}: finished on an earlier call, kept (test accuracy {accuracy(folder):.4f})")
        return
    resume = (folder / INFO_NAME).is_file()
    if resume:
        command = ["-m", "keras_ultimus.train", "--resume", str(folder), "--data", str(s.data)]
    else:
        shutil.rmtree(folder, ignore_errors=True)
        command = [
            "-m",
            "keras_ultimus.train",
            "--data",
            str(s.data),
            "--pipeline",
            PIPELINE,
            *flags,
            "--out",
            str(folder),
        ]
    if s.left() >= GRACE:
        say(s, f"{name}: start on {backend}: python {' '.join(command)}")
    start = time.time()
    if run_limited(s, name, command, backend) == "ok":
        if accuracy(folder) is None:
            say(s, f"{name}: FAILED: it exited 0 without finishing its run folder")
            s.failed.append(f"{name} (unfinished)")
            return
        say(s, f"{name}: done in {time.time() - start:.1f} s, test accuracy {accuracy(folder):.4f}")
        if not resume:
            (folder / "seconds.txt").write_text(f"{time.time() - start:.1f}\n")


def in_parallel(s: Session, calls: list[Callable[[], None]]) -> None:
    """Run `calls` on up to --jobs threads (each starts one child at a time); a stop interrupts them all."""
    pool = concurrent.futures.ThreadPoolExecutor(s.jobs)
    try:
        for future in [pool.submit(call) for call in calls]:
            future.result()
    except BaseException:
        stop_children(s)
        raise
    finally:
        pool.shutdown(wait=True)


def stop_children(s: Session) -> None:
    """No new run starts; the running ones are interrupted (they resume on the next call)."""
    s.stopping = True
    for proc in list(s.running):
        signal_group(proc, signal.SIGINT)


def summary(s: Session, stage: str, lines: list[str]) -> None:
    """A stage's figures, on stderr and in work/summary/STAGE.txt (packed into summary.txt)."""
    text = "\n".join(lines) + "\n"
    (s.work / "summary" / f"{stage}.txt").write_text(text)
    print(text, end="", file=sys.stderr)


def stage_bench(s: Session) -> None:
    """The bench on torch and jax: synthetic data, so it needs no data and runs while the parts arrive."""
    folder = s.work / "bench"
    if (folder / "bench.json").is_file():
        return say(s, "bench: done on an earlier call, kept")
    shutil.rmtree(folder, ignore_errors=True)
    flags = (
        [
            "--steps",
            "1",
            "--repeats",
            "1",
            "--batch-size",
            "8",
            "--matmul-size",
            "64",
            "--precisions",
            "float32",
        ]
        if s.dry_run
        else [
            "--steps",
            "20",
            "--repeats",
            "3",
            "--matmul-size",
            "8192",
            "--precisions",
            "float32,mixed_bfloat16,mixed_float16",
        ]
    )
    command = [
        "-m",
        "keras_ultimus.bench",
        "--backends",
        "torch,jax",
        "--pipeline",
        PIPELINE,
        *flags,
        "--out",
        str(folder),
    ]
    say(s, f"bench: python {' '.join(command)}")
    outcome = run_limited(s, "bench", command)
    if outcome == "ok":
        summary(s, "bench", [(folder / "bench.md").read_text()])
    elif outcome == "late":
        shutil.rmtree(
            folder, ignore_errors=True
        )  # the bench does not resume: it starts over next call


def stage_train(s: Session) -> None:
    """The timed runs, one at a time (alone on the GPU)."""
    lines = []
    for backend in ("torch", "jax"):
        folder = s.work / f"train-{backend}"
        train_run(s, folder.name, backend, s.tiny)
        seconds = folder / "seconds.txt"
        timed = (
            f"{seconds.read_text().strip()} s from start until the run folder was written"
            if seconds.is_file()
            else "? s (resumed: not timed)"
        )
        acc = accuracy(folder)
        lines.append(
            f"{backend}: "
            + (f"test accuracy {acc:.4f}, {timed}" if acc is not None else "not finished")
        )
    summary(s, "train", lines)


def stage_bf16(s: Session) -> None:
    """Seed 0 for 8 epochs in float32 and in mixed_bfloat16: both test accuracies and their difference."""
    precisions = ("float32", "mixed_bfloat16")
    in_parallel(
        s,
        [
            lambda p=p: train_run(
                s, f"bf16-{p}", "torch", ["--seed", "0", "--epochs", "8", "--precision", p, *s.tiny]
            )
            for p in precisions
        ],
    )
    acc, lines = {p: accuracy(s.work / f"bf16-{p}") for p in precisions}, []
    for p in precisions:
        epochs = run_info(s.work / f"bf16-{p}").get("config", {}).get("epochs", "?")
        lines.append(
            f"{p}: seed 0, {epochs} epochs, final test accuracy "
            + (f"{100 * acc[p]:.2f}%" if acc[p] is not None else "not finished")
        )
    if None not in acc.values():
        d = 100 * (acc["mixed_bfloat16"] - acc["float32"])
        lines.append(
            f"difference (bf16 - fp32): {d:+.2f} points ({'within' if abs(d) <= 1 else 'NOT within'} 1 point)"
        )
    summary(s, "bf16", lines)


def final_scores(folders: dict[int, Path]) -> dict[str, list[float]]:
    """The finished runs' final test accuracies: "plain", and "flip TTA" where the run scored it."""
    finals = [run_info(f)["final"] for f in folders.values() if accuracy(f) is not None]
    return {
        "plain": [f["val_accuracy"] for f in finals],
        "flip TTA": [f["test_accuracy_flip_tta"] for f in finals if "test_accuracy_flip_tta" in f],
    }


def write_config(path: Path, config: dict) -> Path:
    """A train --config file."""
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def seed_lines(folders: dict[int, Path]) -> list[str]:
    """Each seed's final test accuracy (plain, flip TTA when scored) and largest drop after epoch 3; mean ± std."""
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
            f"seed {seed}: final test accuracy {100 * acc:.2f}%"
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


def stage_seeds(s: Session) -> None:
    """The default with seeds 0, 1, 2; seed 0 is the train stage's torch run when that finished."""
    folders = {seed: s.work / f"seed-{seed}" for seed in (0, 1, 2)}
    if accuracy(s.work / "train-torch") is not None:
        say(s, "seed-0: the train stage's train-torch, kept")
        folders[0] = s.work / "train-torch"
    in_parallel(
        s,
        [
            lambda f=f, seed=seed: train_run(s, f.name, "torch", ["--seed", str(seed), *s.tiny])
            for seed, f in folders.items()
            if f.name != "train-torch"
        ],
    )
    summary(s, "seeds", seed_lines(folders))


def stage_recipe(s: Session) -> None:
    """The reference model on the candidate recipe RECIPE, seeds 0, 1, 2 (the faithful default's target: 72%)."""
    folders = {seed: s.work / f"recipe-{seed}" for seed in (0, 1, 2)}
    in_parallel(
        s,
        [
            lambda f=f, seed=seed: train_run(
                s, f.name, "torch", [*RECIPE, "--seed", str(seed), *s.tiny]
            )
            for seed, f in folders.items()
        ],
    )
    summary(s, "recipe", [f"the reference model with {' '.join(RECIPE)}:", *seed_lines(folders)])


def stage_repro(s: Session) -> None:
    """The original's schedule with each attention reading (seed 0), and their test curves beside its log."""
    folders = {a: s.work / f"repro-{a}" for a in ATTENTIONS}
    schedule = TRAIN_FLAGS + s.tiny  # the dry run's --epochs 1 comes last, so it wins
    in_parallel(
        s,
        [
            lambda a=a, f=f: train_run(
                s, f.name, "torch", [*schedule, "--attention", a, "--seed", "0"]
            )
            for a, f in folders.items()
        ],
    )
    from keras_ultimus.report.runs import read_log
    from keras_ultimus.report.search_charts import plot_reproduction

    logs = {
        a: read_log(f / "log.csv") for a, f in folders.items() if accuracy(f) is not None
    }  # epochs from 1
    lines = [
        f"the original's schedule ({' '.join(TRAIN_FLAGS)}); its log: "
        + ", ".join(f"{100 * v:.2f}% after epoch {e}" for e, v in PUBLISHED_TEST_ACCURACY.items())
    ]
    for a in ATTENTIONS:
        if a not in logs:
            lines.append(f"--attention {a}: not finished")
            continue
        test = dict(zip(logs[a]["epoch"], logs[a]["val_accuracy"]))
        lines.append(
            f"--attention {a}: "
            + ", ".join(
                f"{100 * test[e]:.2f}% after epoch {e}"
                for e in PUBLISHED_TEST_ACCURACY
                if e in test
            )
        )
    if logs:
        (s.work / "repro").mkdir(exist_ok=True)
        plot_reproduction(
            {f"--attention {a}": log for a, log in logs.items()},
            PUBLISHED_TEST_ACCURACY,
            s.work / "repro" / "repro.png",
        )
    summary(s, "repro", lines)


def stage_ablation(s: Session) -> None:
    """The best variant with one option changed per arm, at --seeds seeds; each arm's mean against the base's."""
    folder = s.work / "ablation"
    folder.mkdir(exist_ok=True)
    configs = {
        arm: write_config(folder / f"{arm}.json", {**BEST_VARIANT, **change})
        for arm, change in ARMS.items()
    }
    runs = {
        f"ablation-{arm}-s{seed}": ["--config", str(config), "--seed", str(seed), *s.tiny]
        for seed in s.seeds
        for arm, config in configs.items()
    }  # every arm's seed 0 first
    in_parallel(
        s, [lambda name=name, f=f: train_run(s, name, "torch", f) for name, f in runs.items()]
    )
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


def stage_search(s: Session) -> None:
    """Hyperband (with --jobs > 1 a KerasTuner chief and N workers); its result and top 10 trials."""
    folder = s.work / "search"
    if (folder / "result.json").is_file():
        say(s, "search: finished on an earlier call, kept")
    else:
        flags = [
            "--data",
            str(s.data),
            "--out",
            str(folder),
            "--algorithm",
            "hyperband",
            "--epochs",
            str(s.search_epochs),
            "--seed",
            "0",
            "--pipeline",
            PIPELINE,
            "--space",
            s.args.space,
        ]
        flags += ["--limit-train", "64", "--batch-size", "16"] if s.dry_run else []
        command = (
            ["-m", "keras_ultimus.tuner.launch", "--workers", str(s.jobs)]
            if s.jobs > 1
            else ["-m", "keras_ultimus.tuner.tune"]
        )
        say(s, f"search: python {' '.join(command + flags)} (resumes its folder)")
        if run_limited(s, "search", command + flags) == "ok":
            say(s, "search: done")
    if not (folder / "result.json").is_file():
        return
    import pandas as pd

    board = pd.read_csv(folder / "leaderboard.csv", dtype={"trial_id": str})
    done = board[board["status"] == "COMPLETED"]
    columns = [
        "trial_id",
        "num_blocks",
        "key_dim",
        "scale",
        "residual",
        "conv_widths",
        "downsample",
        "stem",
        "pooling",
        "whiten",
        "label_smoothing",
        "weight_decay",
        "ema",
        "max_lr",
        "tuner/epochs",
        "trainable_params",
        "best_val_accuracy",
    ]
    summary(
        s,
        "search",
        [
            json.dumps(json.loads((folder / "result.json").read_text())),
            done[[c for c in columns if c in done]].head(10).to_string(index=False),
        ],
    )


def top_configs(search: Path, n: int = 3) -> list[dict]:
    """The search's `n` best distinct configurations as train --config values: best.json, then the completed trials.

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
        )  # best.json: the search's settings too
        if config not in chosen:
            chosen.append(config)
    return chosen[:n]


def confirm_name(k: int, seed: int) -> str:
    """The run folder of top-k configuration's `seed` (seed 0 keeps the earlier sessions' name, confirm-k)."""
    return f"confirm-{k}" if seed == 0 else f"confirm-{k}-s{seed}"


def stage_confirm(s: Session) -> None:
    """The top 3 configurations at 24 epochs on the test set (flip TTA beside), each at --seeds seeds, and
    the best one at every --depths with the residual on and off (seed 0)."""
    search, folder = s.work / "search", s.work / "confirm"
    if not (search / "best.json").is_file() or not (search / "leaderboard.csv").is_file():
        say(s, f"confirm: no finished search in {search} (run the search stage first); skipped")
        s.failed.append("confirm (no search)")
        return
    folder.mkdir(exist_ok=True)
    configs = [
        {**config, "tta": "flip"} for config in top_configs(search)
    ]  # val_accuracy stays the plain figure
    for k, config in enumerate(configs, 1):
        write_config(folder / f"top{k}.json", config)
    best = configs[0]
    depth_runs = {}  # (blocks, residual) -> run folder name; the best's own is confirm-1
    for d in s.depths:
        for residual in (False, True):
            if (d, residual) == (best["num_blocks"], bool(best.get("residual"))):
                depth_runs[d, residual] = confirm_name(1, 0)
                continue
            name = f"depth-{d}-{'residual' if residual else 'plain'}"
            write_config(folder / f"{name}.json", {**best, "num_blocks": d, "residual": residual})
            depth_runs[d, residual] = name
    flags = ["--epochs", "24", *s.tiny]
    runs = {
        confirm_name(k, seed): [
            "--config",
            str(folder / f"top{k}.json"),
            "--seed",
            str(seed),
            *flags,
        ]
        for seed in s.seeds
        for k in range(1, len(configs) + 1)
    }  # every configuration's seed 0 first
    runs |= {
        name: ["--config", str(folder / f"{name}.json"), "--seed", "0", *flags]
        for name in depth_runs.values()
        if name not in runs
    }
    in_parallel(
        s, [lambda name=name, f=f: train_run(s, name, "torch", f) for name, f in runs.items()]
    )

    from keras_ultimus.config import model_kwargs
    from keras_ultimus.models.ultimus import trainable_params
    from keras_ultimus.report.search_charts import plot_test_depth

    lines = ["confirmations (scored on the test set):"]
    for k, config in enumerate(configs, 1):
        shown = " ".join(
            f"{key}={value}" for key, value in config.items() if key not in ("batch_size", "seed")
        )
        lines.append(f"  top{k}: {trainable_params(**model_kwargs(config)):,} params; {shown}")
        lines += [
            "    " + line
            for line in seed_lines({seed: s.work / confirm_name(k, seed) for seed in s.seeds})
        ]
    rows = []
    for (d, residual), name in depth_runs.items():
        info, acc = run_info(s.work / name), accuracy(s.work / name)
        rows.append(
            {
                "blocks": d,
                "residual": residual,
                "run": name,
                "trainable_params": trainable_params(**model_kwargs(info["config"]))
                if acc is not None
                else "",
                "epochs": info["config"]["epochs"] if acc is not None else "",
                "test_accuracy": f"{acc:.4f}" if acc is not None else "",
            }
        )
        lines.append(
            f"  depth {d}, residual {'on' if residual else 'off'}: "
            + (f"{100 * acc:.2f}% ({name})" if acc is not None else f"not finished ({name})")
        )
    with open(folder / "depth.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = [r for r in rows if r["test_accuracy"]]
    if done:
        series = {}
        for residual in (False, True):
            points = [r for r in done if r["residual"] == residual]
            if points:
                series[f"residual {'on' if residual else 'off'}"] = (
                    [r["blocks"] for r in points],
                    [float(r["test_accuracy"]) for r in points],
                )
        plot_test_depth(series, done[0]["epochs"], folder / "depth.png")
    summary(s, "confirm", lines)


STAGE_FUNCTIONS = {
    "bench": stage_bench,
    "train": stage_train,
    "bf16": stage_bf16,
    "seeds": stage_seeds,
    "recipe": stage_recipe,
    "repro": stage_repro,
    "ablation": stage_ablation,
    "search": stage_search,
    "confirm": stage_confirm,
}


def gather_parts(s: Session) -> None:
    """Bring this call's data parts into the cache (the dry run: a fake tarball in 3 parts, the last withheld)."""
    parts = s.cache / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    if s.dry_run:
        tarball = write_fake_tarball(s.cache / "fake.tar.gz")
        data = tarball.read_bytes()
        third = -(-len(data) // 3)
        for i, suffix in enumerate(
            ("aa", "ab")
        ):  # "ac" withheld, to exercise the partial-data path
            (parts / f"cifar.part-{suffix}").write_bytes(data[i * third : (i + 1) * third])
    for part in sorted((ROOT / ".data-parts").glob("cifar.part-*")) if not s.dry_run else []:
        if not (parts / part.name).exists():
            shutil.copy(part, parts / part.name)
    say(s, f"data parts here: {' '.join(sorted(p.name for p in parts.iterdir()))}")


def assemble_data(s: Session) -> Path:
    """The checked tarball if every part is here; else the complete batch files read so far, as a partial copy."""
    whole, note = s.cache / "cifar-10-binary.tar.gz", s.work / "data.txt"
    if (
        whole.is_file() and hashlib.md5(whole.read_bytes()).hexdigest() == TARBALL_MD5
    ):  # checked on an earlier call
        return whole
    parts = sorted((s.cache / "parts").glob("cifar.part-*"))
    names = [p.name[-2:] for p in parts]
    expected = [a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"]
    joined = b"".join(
        p.read_bytes() for p, name, e in zip(parts, names, expected) if name == e
    )  # up to a gap
    raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(joined)
    members = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
            for member in tar:
                body = (tar.extractfile(member) or io.BytesIO()).read()
                if member.isfile() and len(body) == member.size:
                    members[Path(member.name).name] = body
    except (tarfile.ReadError, EOFError, OSError, zlib.error):
        pass  # the tarball ends early: keep the members read whole
    checked = {
        n: hashlib.md5(b).hexdigest() == OFFICIAL_MD5[n]
        for n, b in members.items()
        if n in OFFICIAL_MD5
    }
    if (
        hashlib.md5(joined).hexdigest() == TARBALL_MD5
        and all(checked.values())
        and len(checked) == 6
    ):
        whole.write_bytes(joined)
        note.write_text(f"full data: {whole}, md5 {TARBALL_MD5}; batch md5s official: {checked}\n")
        return whole
    bad = [n for n, ok in checked.items() if not ok and not s.dry_run]
    train = [members[n] for n in sorted(members) if n.startswith("data_batch") and n not in bad]
    if not train:
        raise UserError(
            f"no complete training batch file in the parts {names}; bring part aa first"
        )
    import numpy as np

    records = np.frombuffer(b"".join(train), np.uint8).reshape(-1, 3073)
    if "test_batch.bin" in members and "test_batch.bin" not in bad:
        test = np.frombuffer(members["test_batch.bin"], np.uint8).reshape(-1, 3073)
    else:  # hold out the last sixth of what we have as the test split
        test, records = (
            records[len(records) - len(records) // 6 :],
            records[: len(records) - len(records) // 6],
        )
    per_file, folder = len(records) // 5, s.cache / "partial" / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(5):
        (folder / f"data_batch_{k + 1}.bin").write_bytes(
            records[k * per_file : (k + 1) * per_file].tobytes()
        )
    (folder / "test_batch.bin").write_bytes(test.tobytes())
    note.write_text(
        f"PARTIAL data: parts {names} of the tarball; complete batch files {sorted(members)} (official md5: "
        f"{checked}). Training on {5 * per_file} train and {len(test)} test images in {folder} (the test split is "
        "the held-out end of the training files when test_batch.bin is missing).\nNot comparable with the committed "
        "full-data CPU run. For the CPU comparison, put the same parts in .data-parts/ on the CPU machine, run "
        "`python -m benchmarks.gpu --data-only`, then `python -m keras_ultimus.train --data PATH` with the path it "
        "prints.\n"
    )
    return folder


def select_models(
    base: int, models: list[tuple[Path, int]], limit: int = LIMIT
) -> tuple[list, list, list]:
    """Models (path, size), in order, into the first archive after `base` bytes of logs, then a second; rest dropped."""
    first, second, dropped, size, extra = [], [], [], base, 0
    for path, n in models:
        if size + n <= limit:
            first.append(path)
            size += n
        elif extra + n <= limit:
            second.append(path)
            extra += n
        else:
            dropped.append(path)
    return first, second, dropped


def model_rank(path: Path) -> int:
    """The models the README cites first: the timed runs, the seeds, the best confirmation; then the others."""
    run = path.parent.name
    if re.fullmatch(r"train-\w+|seed-\d+|confirm-1", run):
        return 0
    return 1 if run.startswith("confirm-") else 2 if run.startswith("bf16-") else 3


def write_archive(path: Path, files: list[Path], work: Path, note: str | None = None) -> None:
    """A tar.gz of `files` relative to `work` (a long log only its tail), plus packed.txt when `note` is given."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in files:
            if p.suffix == ".log" and p.stat().st_size > LOG_TAIL:
                with open(p, "rb") as f:
                    f.seek(-LOG_TAIL, os.SEEK_END)
                    body = b"[gpu: the log's last %d bytes]\n" % LOG_TAIL + f.read()
                info = tarfile.TarInfo(str(p.relative_to(work)))
                info.size, info.mtime = len(body), int(p.stat().st_mtime)
                tar.addfile(info, io.BytesIO(body))
            else:
                tar.add(p, arcname=str(p.relative_to(work)))
        if note is not None:
            info = tarfile.TarInfo("packed.txt")
            info.size = len(note.encode())
            tar.addfile(info, io.BytesIO(note.encode()))
    os.replace(tmp, path)


def pack_data_note(s: Session) -> None:
    """Say what data the runs use, and copy data.txt into --out."""
    if (s.work / "data.txt").is_file():
        say(s, (s.work / "data.txt").read_text().strip())
        shutil.copy(s.work / "data.txt", s.out / "data.txt")


def pack(s: Session) -> None:
    """What matters of --work into --out: at most 6 files, none in a folder, each under 16 MiB."""
    if (s.out / "versions.txt").is_file():
        shutil.copy(s.out / "versions.txt", s.work / "versions.txt")
    files, models = [], []
    for root, dirs, names in os.walk(s.work):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            if path.suffix in KEEP and not name.startswith(".") and name != "best.keras":
                (models if path.suffix == ".keras" else files).append(path)
    base = sum(
        min(p.stat().st_size, LOG_TAIL) if p.suffix == ".log" else p.stat().st_size for p in files
    )
    ranked = sorted(models, key=lambda p: (model_rank(p), str(p)))
    first, second, dropped = select_models(base, [(p, p.stat().st_size) for p in ranked])
    manifest = [
        f"gpu-results.tar.gz: {len(files) + len(first)} files, "
        f"{(base + sum(p.stat().st_size for p in first)) / 2**20:.1f} MiB before compression"
    ]
    if second:
        manifest.append(
            "gpu-models-extra.tar.gz (did not fit the first archive): "
            + " ".join(str(p.relative_to(s.work)) for p in second)
        )
    if dropped:
        manifest.append(
            "DROPPED (over 2 x 15 MiB), still on the machine under the work folder: "
            + " ".join(str(p.relative_to(s.work)) for p in dropped)
        )
    if base > LIMIT:
        manifest.append("WARNING: the logs and tables alone are over 15 MiB")
    write_archive(s.out / "gpu-results.tar.gz", files + first, s.work, "\n".join(manifest) + "\n")
    if second:
        write_archive(s.out / "gpu-models-extra.tar.gz", second, s.work)
    else:
        (s.out / "gpu-models-extra.tar.gz").unlink(missing_ok=True)
    for name in ("gpu-results.tar.gz", "gpu-models-extra.tar.gz"):
        if (s.out / name).is_file() and (s.out / name).stat().st_size > 16 * 2**20:
            manifest.append(f"WARNING: {name} is over 16 MiB: it won't come back")
    stages = sorted((s.work / "summary").glob("*.txt"))
    text = (
        "".join(f"== {p.stem}\n{p.read_text()}" for p in stages)
        + "== packed\n"
        + "\n".join(manifest)
        + "\n"
    )
    (s.out / "summary.txt").write_text(text)


def prepare_packages(s: Session) -> subprocess.Popen:
    """Merge .gpu-carry/, install .whl/ into /tmp/site if Keras or KerasTuner is missing; start versions.txt."""
    import importlib.util

    carry = ROOT / ".gpu-carry"
    if not s.dry_run and carry.is_dir():  # an earlier session's finished work: what is here wins
        for path in sorted(carry.rglob("*")):
            target = s.work / path.relative_to(carry)
            if path.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if (
        not s.dry_run
        and not (SITE / ".installed").exists()
        and wheels
        and not all(importlib.util.find_spec(m) for m in ("keras", "keras_tuner"))
    ):
        say(s, f"installing {len(wheels)} wheels from .whl/ into {SITE}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--no-cache-dir",
                "--upgrade",
                "--target",
                str(SITE),
                *map(str, wheels),
            ],
            check=True,
        )
        (SITE / ".installed").touch()
    if not s.dry_run and (SITE / ".installed").exists():
        sys.path.insert(0, str(SITE))
        s.env["PYTHONPATH"] = os.pathsep.join([str(SITE), s.env["PYTHONPATH"]])
    if s.dry_run:
        sys.path.insert(
            0, str(NO_TENSORFLOW)
        )  # this process too, when the confirm stage imports the tuner
    code = "from keras_ultimus.provenance import versions; print(*versions(), sep='\\n')"
    with open(s.out / "versions.txt", "w") as f:
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, env=s.env, cwd=ROOT
        )


def parse_stages(text: str) -> list[str]:
    """Comma-separated stage names, each one of STAGES."""
    stages = [name.strip() for name in text.split(",")]
    unknown = [name for name in stages if name not in STAGES]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(
            f"unknown stage '{unknown[0] if unknown else text}' (stages: {','.join(STAGES)})"
        )
    return stages


def parse_depths(text: str) -> list[int]:
    """Comma-separated block counts from 1 to 8."""
    if not re.fullmatch(r"[1-8](,[1-8])*", text):
        raise argparse.ArgumentTypeError(f"block counts 1-8, comma-separated, got '{text}'")
    return [int(d) for d in text.split(",")]


def positive(text: str) -> int:
    """A positive integer."""
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise argparse.ArgumentTypeError(f"a positive integer, got '{text}'")
    return int(text)


def build_parser() -> ArgumentParser:
    """The driver's flags."""
    p = ArgumentParser(
        prog="python -m benchmarks.gpu",
        description=__doc__.split("\n")[0],
        epilog="Stages and state: see this module's docstring and DEVELOPERS.md ('GPU runs').",
    )
    p.add_argument(
        "--stages",
        type=parse_stages,
        default=["bench", "train"],
        help=f"comma-separated, run in this order: {','.join(STAGES)}",
    )
    p.add_argument(
        "--jobs",
        type=positive,
        default=1,
        help="runs of a stage at once on the one GPU (bf16, seeds, "
        "recipe, repro, ablation, confirm; the search: a KerasTuner chief and N workers); the timed train "
        "runs always run alone",
    )
    p.add_argument(
        "--time-limit",
        type=positive,
        metavar="S",
        help="start no run in the last 30 s before S seconds "
        "and interrupt the running ones at S (they resume); set it under the call's timeout (no default)",
    )
    p.add_argument(
        "--out", help="where the results are packed (default: $OUT, else runs/gpu-<time>)"
    )
    p.add_argument(
        "--work",
        help="run folders kept between calls (default: $ULTIMUS_GPU_STATE/runs, "
        "/tmp/keras-ultimus-gpu/runs; with --dry-run OUT.work)",
    )
    p.add_argument(
        "--depths",
        type=parse_depths,
        help="block counts of the depth chart, each with the residual on "
        "and off (default: 1,2,3,4; dry run 1,2)",
    )
    p.add_argument(
        "--seeds",
        type=positive,
        default=3,
        help="seeds 0 .. N-1 of each top configuration (confirm) and each arm (ablation)",
    )
    p.add_argument(
        "--space",
        choices=SPACES,
        default="wide",
        help="the search space (default: wide, the residual "
        "stem, pooling, whitening and the recipe options beside the reference's axes)",
    )
    p.add_argument(
        "--search-epochs",
        type=positive,
        default=24,
        help="Hyperband's most epochs for one trial; 24 is "
        "the confirmations' length, so the last rung is scored on their schedule (dry run: 2)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="every stage on this CPU: a fake tarball, tiny limits, TensorFlow made unimportable",
    )
    p.add_argument(
        "--data-only",
        action="store_true",
        help="only gather, reassemble and check the data, and print "
        "its --data (on a CPU machine: the same partial data, for a comparison run)",
    )
    return p


@cli
def main(argv: list[str] | None = None) -> int:
    """Run the selected stages, packing the results after each one and at the end."""
    args = build_parser().parse_args(argv)
    s = Session(args)
    call = " ".join(sys.argv[1:] if argv is None else argv)
    say(s, f"call: python -m benchmarks.gpu {call} (work {s.work})")
    gather_parts(s)
    if args.data_only:
        s.data = assemble_data(s)
        pack_data_note(s)
        print(f"--data {s.data}")
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop packs too, as Ctrl-C does
    versions = prepare_packages(s)
    try:
        for stage in args.stages:
            if stage != "bench" and s.data is None:
                s.data = assemble_data(s)
                pack_data_note(s)
            start = time.time()
            say(s, f"stage {stage}: start")
            STAGE_FUNCTIONS[stage](s)
            say(s, f"stage {stage}: end ({time.time() - start:.0f} s)")
            pack(s)  # after every stage: a call cut off later still brings these back
    finally:
        stop_children(s)
        try:
            versions.wait(60)
        except subprocess.TimeoutExpired:
            versions.kill()
        pack(s)
    if s.failed:
        say(
            s,
            f"done with problems: {'; '.join(s.failed)}; the run folders are in {s.work}, the results in {s.out}",
        )
        return 1
    say(s, f"done: the run folders are in {s.work}, the results in {s.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

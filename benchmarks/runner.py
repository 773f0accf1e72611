"""The GPU driver's generic runner: one call's settings, its children under a time limit, runs kept or resumed.

Every run is a child `python -m ...` in its own process group, logged to work/logs/NAME.log. Near the time limit
none starts; at it the running ones get Ctrl-C (a run stops resumable) and GRACE seconds before a kill.
"""

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from benchmarks.experiments import PIPELINE, TINY, Run
from benchmarks.results import accuracy, mark_held_out, split
from keras_ultimus.runs.folder import INFO_NAME

ROOT = Path(__file__).resolve().parents[1]
GRACE = 30  # no run starts this close to the time limit; an interrupted one gets this long to stop
NO_TENSORFLOW = (
    ROOT / "tests" / "no_tensorflow"
)  # a `tensorflow` that fails to import, as on the GPU


class Session:
    """One call's settings and state: folders, deadline, data, the children running, what went wrong."""

    def __init__(self, args) -> None:
        self.args, self.dry_run, self.jobs = args, args.dry_run, args.jobs
        self.out = Path(
            args.out or os.environ.get("OUT") or f"runs/gpu-{datetime.now():%Y%m%d-%H%M%S}"
        ).resolve()
        state = Path(os.environ.get("ULTIMUS_GPU_STATE", "/tmp/keras-ultimus-gpu"))
        default_work = Path(f"{self.out}.work") if self.dry_run else state / "runs"  # state kept
        self.work = Path(args.work or default_work).resolve()
        self.cache = self.work / "dry-run-data" if self.dry_run else state / "data"
        self.deadline = time.time() + args.time_limit if args.time_limit else float("inf")
        self.depths = args.depths or ([1, 2] if self.dry_run else [1, 2, 3, 4])
        self.search_epochs = 2 if self.dry_run else args.search_epochs
        self.seeds = list(range(args.seeds))
        self.tiny = TINY.split() if self.dry_run else []
        self.threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
        self.data: Path | None = None
        self.held_out = False  # the data's scoring split is carved from the training files
        self.failed: list[str] = []
        self.running: set[subprocess.Popen] = set()
        self.stopping = False
        if os.environ.get("KERAS_BACKEND") not in ("torch", "jax"):  # no TensorFlow there
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


def summary(s: Session, stage: str, lines: list[str]) -> None:
    """A stage's figures, on stderr and in work/summary/STAGE.txt (packed into summary.txt)."""
    text = "\n".join(lines) + "\n"
    (s.work / "summary" / f"{stage}.txt").write_text(text)
    print(text, end="", file=sys.stderr)


def run_limited(s: Session, name: str, command: list[str], backend: str = "torch") -> str:
    """Run `python COMMAND` (log in logs/NAME.log) unless the limit is near; interrupt it at the limit.

    Returns "ok", "late" (not started, or interrupted: it resumes next call) or "failed"; says and records the
    last two.
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
        took = time.time() - start
        say(
            s,
            f"{name}: interrupted at the time limit after {took:.0f} s (it resumes on the next call)",
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
        kept = f"{split(folder)} accuracy {accuracy(folder):.4f}"
        say(s, f"{name}: finished on an earlier call, kept ({kept})")
        return
    resume = (folder / INFO_NAME).is_file()
    if resume:
        command = ["-m", "keras_ultimus.train", "--resume", str(folder), "--data", str(s.data)]
    else:
        shutil.rmtree(folder, ignore_errors=True)
        data = ["--data", str(s.data), "--pipeline", PIPELINE]
        command = ["-m", "keras_ultimus.train", *data, *flags, "--out", str(folder)]
    if s.left() >= GRACE:
        say(s, f"{name}: start on {backend}: python {' '.join(command)}")
    start = time.time()
    if run_limited(s, name, command, backend) == "ok":
        if accuracy(folder) is None:
            say(s, f"{name}: FAILED: it exited 0 without finishing its run folder")
            s.failed.append(f"{name} (unfinished)")
            return
        if s.held_out:
            mark_held_out(folder)
        took = time.time() - start
        say(s, f"{name}: done in {took:.1f} s, {split(folder)} accuracy {accuracy(folder):.4f}")
        if not resume:
            (folder / "seconds.txt").write_text(f"{took:.1f}\n")


def write_config(path: Path, config: dict) -> Path:
    """A train --config file."""
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def run_flags(s: Session, run: Run, configs: dict[str, Path]) -> list[str]:
    """A run's train flags: its --config file, its own flags, then the dry run's limits (they win)."""
    return [*(["--config", str(configs[run.config])] if run.config else []), *run.flags, *s.tiny]


def train_all(
    s: Session,
    runs: Iterable[Run],
    configs: dict[str, dict] | None = None,
    folder: Path | None = None,
) -> None:
    """Write `configs` as folder/NAME.json, then train `runs` (each kept, resumed or new) --jobs at a time."""
    if configs:
        folder.mkdir(exist_ok=True)
    paths = {name: write_config(folder / f"{name}.json", c) for name, c in (configs or {}).items()}
    calls = [lambda r=r: train_run(s, r.name, r.backend, run_flags(s, r, paths)) for r in runs]
    in_parallel(s, calls)


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

"""Run one search as a KerasTuner chief and N workers on this machine: `python -m keras_ultimus.tuner.launch --help`.

Every flag other than the launcher's own goes to `keras_ultimus.tuner.tune`
unchanged, for the chief and each worker. Logs go to `<out>/logs/<tuner id>.log`.
The launcher stops every child when it exits for any reason: the search is
done, a child failed, Ctrl-C, SIGTERM or SIGHUP; and on Linux a child also
gets SIGTERM if the launcher itself is killed.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from keras_ultimus.backend import prepare
from keras_ultimus.errors import ArgumentParser, UserError, cli, prog
from keras_ultimus.runs.folder import FolderLock, clear_folder
from keras_ultimus.tuner import options

# After the chief is done, a worker that is still alive has no trial and waits
# on a server that is gone (KerasTuner's client waits up to an hour).
WORKER_GRACE_S = 60
MAX_RESTARTS = 3  # per worker killed by a signal
STOP_TIMEOUT_S = 10


class Terminated(Exception):
    """The launcher got SIGTERM or SIGHUP."""


def free_port(host: str) -> int:
    """A TCP port that is free on `host` right now."""
    try:
        with socket.socket() as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    except OSError as e:
        raise UserError(f"--host {host}: cannot listen there ({e.strerror or e})") from None


def completed_trials(out: Path) -> int:
    """How many trials the oracle has recorded as completed so far."""
    n = 0
    for path in out.glob("trial_*/trial.json"):
        try:
            n += json.loads(path.read_text())["status"] == "COMPLETED"
        except (OSError, ValueError, KeyError):
            pass  # being written right now
    return n


def die_with_parent() -> None:
    """In a child, before exec: ask Linux to send SIGTERM when the launcher dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(procs: dict[str, subprocess.Popen]) -> None:
    """Terminate the processes still running, killing those that don't stop in time, and reap them all."""
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start_child(
    tuner_id: str, env: dict, tune_args: list[str], logs: Path, mode: str = "w"
) -> subprocess.Popen:
    """Start the chief or one worker, logging to `logs/<tuner_id>.log` (appending after a restart)."""
    with open(logs / f"{tuner_id}.log", mode) as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "keras_ultimus.tuner.tune", *tune_args],
            env={**env, "KERASTUNER_TUNER_ID": tuner_id},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    print(f"{tuner_id}: pid {child.pid}")
    return child


def child_env(host: str, port: int) -> dict:
    """The environment that makes `tune` a KerasTuner chief or worker of the oracle at `host:port`."""
    return {
        **os.environ,
        "KERASTUNER_ORACLE_IP": host,
        "KERASTUNER_ORACLE_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }


def start(workers: int, env: dict, tune_args: list[str], logs: Path) -> dict[str, subprocess.Popen]:
    """Start the chief and the workers, each logging to its own file."""
    return {
        tuner_id: start_child(tuner_id, env, tune_args, logs)
        for tuner_id in ["chief", *(f"tuner{i}" for i in range(workers))]
    }


def watch(
    procs: dict[str, subprocess.Popen],
    logs: Path,
    out: Path,
    restart: Callable[[str], subprocess.Popen],
) -> int:
    """Report progress until every child exits; stop the rest when one fails or the chief is long done.

    A worker killed by a signal (the OOM killer, a SIGKILL) is started again under its own tuner id, up to
    `MAX_RESTARTS` times: the oracle hands it back its unfinished trial, which then runs again or, after
    `search.MAX_ATTEMPTS` starts, ends as FAILED with its reason. Without that, the chief would wait forever.
    """
    started, chief_done, shown, codes, restarts = time.monotonic(), None, -1, {}, {}
    while len(codes) < len(procs):
        time.sleep(1)
        for name, p in procs.items():
            if name not in codes and p.poll() is not None:
                codes[name] = p.returncode
                print(
                    f"{name} exited with code {p.returncode} after {time.monotonic() - started:.0f} s"
                )
        for name, code in list(codes.items()):
            if (
                name != "chief"
                and code < 0
                and restarts.get(name, 0) < MAX_RESTARTS
                and "chief" not in codes
            ):
                restarts[name] = restarts.get(name, 0) + 1
                print(
                    f"{name} was killed by {signal.Signals(-code).name}; starting it again "
                    f"({restarts[name]} of {MAX_RESTARTS})"
                )
                procs[name] = restart(name)
                del codes[name]
        failed = next((n for n, c in codes.items() if c), None)
        if failed:
            lines = (logs / f"{failed}.log").read_text(errors="replace").strip().splitlines() or [
                ""
            ]
            print(
                f"error: {failed} failed: {lines[-1]} (log: {logs / failed}.log); stopping the others",
                file=sys.stderr,
            )
            return 2 if codes[failed] == 2 else 1
        if "chief" in codes and chief_done is None:
            chief_done = time.monotonic()
        if chief_done and time.monotonic() - chief_done > WORKER_GRACE_S:
            late = [n for n in procs if n not in codes]
            print(f"stopping {', '.join(late)}: the chief is done and had no trial for them")
            break
        n = completed_trials(out)
        if n != shown:
            print(f"{n} trials completed ({time.monotonic() - started:.0f} s)")
            shown = n
    print(f"search done: {out / 'leaderboard.csv'}, {out / 'best.json'}")
    return 0


def raise_terminated(signum, frame):
    raise Terminated(signal.Signals(signum).name)


@cli
def main(argv: list[str] | None = None) -> int:
    """Parse the launcher's flags, check the search flags, launch, and stop every child on the way out."""
    launch_prog, tune_prog = (
        prog("keras_ultimus.tuner.launch", "ultimus-launch"),
        prog("keras_ultimus.tuner.tune", "ultimus-tune"),
    )
    p = ArgumentParser(
        prog=launch_prog,
        description="Run one search as a KerasTuner chief and N workers on this machine.",
        allow_abbrev=False,
        epilog=f"All other flags are the search's (see {tune_prog} --help); e.g. "
        f"{launch_prog} --workers 2 --data cifar-10-binary.tar.gz --epochs 4",
    )
    p.add_argument("--workers", type=int, default=2, help="number of worker processes (default: 2)")
    p.add_argument("--host", default="127.0.0.1", help="address the chief's oracle listens on")
    p.add_argument("--port", type=int, help="the oracle's port (default: a free one)")
    args, tune_args = p.parse_known_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be at least 1, got {args.workers}")
    if args.port is not None and not 0 < args.port < 65536:
        p.error(f"--port must be between 1 and 65535, got {args.port}")
    search = options.parse_args(tune_args)  # bad search flags exit here, before anything starts
    prepare(verbose=search.verbose)  # a bad backend too, before any child starts
    out = Path(search.out)
    options.check_out(out)
    with FolderLock(
        out
    ):  # refused here, in one line, if another search holds it; the chief takes it after
        if search.fresh:
            # The launcher wipes the folder itself, before any process can write into it.
            clear_folder(out)
            tune_args = [a for a in tune_args if a != "--fresh"]
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port(args.host)
    handlers = {s: signal.signal(s, raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    procs = {}
    try:
        env = child_env(args.host, port)
        procs = start(args.workers, env, tune_args, logs)
        print(f"chief and {args.workers} workers on {args.host}:{port}; logs in {logs}/")
        return watch(procs, logs, out, lambda name: start_child(name, env, tune_args, logs, "a"))
    except (KeyboardInterrupt, Terminated) as e:
        print(
            f"\n{type(e).__name__ if isinstance(e, KeyboardInterrupt) else e}: stopping the search; "
            f"run the same command again to resume {out}",
            file=sys.stderr,
        )
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    finally:
        stop(procs)
        for s, handler in handlers.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    raise SystemExit(main())

"""Run one search as a KerasTuner chief and N workers on this machine: `python tuner/launch.py --help`.

Every flag other than the launcher's own goes to `tuner/tune.py` unchanged,
for the chief and each worker. Logs go to `<out>/logs/<tuner id>.log`.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python tuner/launch.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

TUNE = Path(__file__).resolve().with_name("tune.py")
# After the chief is done, a worker that is still alive has no trial and waits
# on a server that is gone (KerasTuner's client waits up to an hour).
WORKER_GRACE_S = 60


def free_port(host: str) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def completed_trials(out: Path) -> int:
    """How many trials the oracle has recorded as completed so far."""
    n = 0
    for path in out.glob("trial_*/trial.json"):
        try:
            n += json.loads(path.read_text())["status"] == "COMPLETED"
        except (OSError, ValueError, KeyError):
            pass  # being written right now
    return n


def stop(procs: dict[str, subprocess.Popen]) -> None:
    """Terminate the processes still running, killing those that don't stop in 10 s."""
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(workers: int, host: str, port: int, tune_args: list[str], out: Path) -> int:
    """Start the chief and `workers` workers, report progress, and wait for all to exit."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": str(port),
            "PYTHONUNBUFFERED": "1"}
    procs = {}
    for tuner_id in ["chief", *(f"tuner{i}" for i in range(workers))]:
        with open(logs / f"{tuner_id}.log", "w") as log:
            procs[tuner_id] = subprocess.Popen(
                [sys.executable, str(TUNE), *tune_args], env={**base, "KERASTUNER_TUNER_ID": tuner_id},
                stdout=log, stderr=subprocess.STDOUT,
            )
    print(f"chief and {workers} workers on {host}:{port}; logs in {logs}/")
    start, chief_done, shown, codes = time.monotonic(), None, -1, {}
    try:
        while len(codes) < len(procs):
            time.sleep(1)
            for name, p in procs.items():
                if name not in codes and p.poll() is not None:
                    codes[name] = p.returncode
                    print(f"{name} exited with code {p.returncode} after {time.monotonic() - start:.0f} s")
            if any(codes.values()):
                failed = next(n for n, c in codes.items() if c)
                lines = (logs / f"{failed}.log").read_text(errors="replace").strip().splitlines() or [""]
                print(f"error: {failed} failed: {lines[-1]} (log: {logs / failed}.log); stopping the others",
                      file=sys.stderr)
                stop(procs)
                return 2 if codes[failed] == 2 else 1
            if "chief" in codes and chief_done is None:
                chief_done = time.monotonic()
            if chief_done and time.monotonic() - chief_done > WORKER_GRACE_S:
                late = [n for n in procs if n not in codes]
                print(f"stopping {', '.join(late)}: the chief is done and had no trial for them")
                stop(procs)
                break
            n = completed_trials(out)
            if n != shown:
                print(f"{n} trials completed ({time.monotonic() - start:.0f} s)")
                shown = n
    except KeyboardInterrupt:
        stop(procs)
        print(f"\ninterrupted: run the same command again to resume {out}", file=sys.stderr)
        return 130
    print(f"search done: {out / 'leaderboard.csv'}, {out / 'best.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the launcher's flags, check the search flags, and launch."""
    p = argparse.ArgumentParser(
        prog="python tuner/launch.py", description=__doc__.split(":")[0] + ".", allow_abbrev=False,
        epilog="All other flags are tune.py's (see python tuner/tune.py --help); "
        "e.g. python tuner/launch.py --workers 2 --data cifar-10-binary.tar.gz --epochs 4",
    )
    p.add_argument("--workers", type=int, default=2, help="number of worker processes (default: 2)")
    p.add_argument("--host", default="127.0.0.1", help="address the chief's oracle listens on")
    p.add_argument("--port", type=int, help="the oracle's port (default: a free one)")
    args, tune_args = p.parse_known_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    from tuner.tune import parse_args  # loads Keras: after --help

    search = parse_args(tune_args)  # bad search flags exit here, before anything starts
    out = Path(search.out)
    if search.fresh:
        # The launcher wipes the folder itself, before any process can write into it.
        shutil.rmtree(out, ignore_errors=True)
        tune_args = [a for a in tune_args if not (len(a) > 3 and "--fresh".startswith(a))]
    return launch(args.workers, args.host, args.port or free_port(args.host), tune_args, out)


if __name__ == "__main__":
    raise SystemExit(main())

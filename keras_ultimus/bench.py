"""Measure training and serving speed against the machine's limit and plain PyTorch (`ultimus-bench --help`).

For each backend (each in its own process, since Keras picks one per process)
and each precision: steady-state training img/s, evaluation img/s and
input-pipeline img/s; in the same process, the matmul peak through that
backend in fp32 and bf16, and the fraction of it reached
(img/s × FLOPs per training image ÷ peak). The plain PyTorch reference
(`benchmarks/plain_torch.py`) runs in the same bench run. Each figure is the
median of `--repeats` timings. `--serve MODEL...` adds serving latency and
throughput. Writes bench.csv, bench.md, bench.png (rounds.png with the rounds)
and bench.json to `--out`.
"""

import argparse
import importlib.util
import json
import os
import platform
import shlex
import sys
from datetime import datetime
from pathlib import Path

from keras_ultimus.backend import INSTALL, prepare
from keras_ultimus.benchmark.results import chart, markdown, rows, run_child, write_csv
from keras_ultimus.benchmark.workers import (
    installed_backends,
    interleaved,
    plain_torch,
    rounds_chart,
    rounds_markdown,
    rounds_worker,
    worker,
)
from keras_ultimus.constants import PRECISIONS
from keras_ultimus.errors import ArgumentParser, UserError, cli, prog
from keras_ultimus.flags import add_flags
from keras_ultimus.provenance import git_state


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def choices(allowed: tuple[str, ...]):
    """An argparse type: a comma-separated list, each item one of `allowed`."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{','.join(bad) or repr(text)} is not one of: {', '.join(allowed)}"
            )
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = ArgumentParser(
        prog=prog("keras_ultimus.bench", "ultimus-bench"),
        description="Measure training and serving speed against the machine's limit and plain PyTorch.",
    )
    p.add_argument("--out", help="output folder (default: runs/bench-<time>)")
    p.add_argument(
        "--backends",
        type=choices(tuple(INSTALL)),
        help="comma-separated (default: every installed one)",
    )
    p.add_argument(
        "--precisions",
        type=choices(PRECISIONS),
        default=["float32", "mixed_bfloat16"],
        help="comma-separated Keras policies (default: float32,mixed_bfloat16)",
    )
    p.add_argument(
        "--steps", type=positive, default=5, help="training steps per timed repeat (default: 5)"
    )
    p.add_argument(
        "--repeats",
        type=positive,
        default=3,
        help="timed repeats per figure; the median is reported (default: 3)",
    )
    p.add_argument("--batch-size", type=positive, default=512)
    add_flags(p, ["jit"])
    p.add_argument("--steps-per-execution", type=positive, default=1)
    p.add_argument(
        "--mirrored",
        type=positive,
        metavar="N",
        help="also time TensorFlow under MirroredStrategy over N devices (the GPUs, else N logical CPUs "
        "with a share of the cores each), with synchronized BatchNorm: the math of one batch",
    )
    p.add_argument(
        "--matmul-size",
        type=positive,
        default=2048,
        help="n of the n×n matmuls timed for the peak (default: 2048)",
    )
    add_flags(p, ["pipeline"])
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--synthetic", action="store_true", help="random CIFAR-shaped images (the default)"
    )
    data.add_argument("--data", help="time on a local CIFAR-10 copy instead of random images")
    p.add_argument(
        "--no-plain-torch",
        dest="plain_torch",
        action="store_false",
        help="skip the plain PyTorch reference",
    )
    p.add_argument(
        "--serve",
        nargs="+",
        metavar="MODEL",
        default=[],
        help="also time serving these models (SavedModel folder, .onnx, .keras or run folder)",
    )
    p.add_argument(
        "--calls", type=positive, default=200, help="batch-1 serving calls timed (default: 200)"
    )
    p.add_argument(
        "--batches", type=positive, default=20, help="batch-256 serving calls timed (default: 20)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds of the training-step comparison: Keras on each backend (torch eager "
        "and compiled), plain PyTorch eager and compiled; 0 skips it (default: 5)",
    )
    p.add_argument("--rounds-only", action="store_true", help="run only the interleaved rounds")
    p.add_argument(
        "--worker", help=argparse.SUPPRESS
    )  # internal: measure one backend, write JSON here
    p.add_argument(
        "--rounds-worker", action="store_true", help=argparse.SUPPRESS
    )  # internal: serve the rounds
    return p


@cli
def main(argv: list[str] | None = None) -> int:
    """Run the bench: one subprocess per backend, the plain PyTorch reference, serving; write the reports."""
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args)
    if args.rounds_worker:
        return rounds_worker(args)
    prepare(verbose=args.verbose)
    backends = args.backends or installed_backends()
    missing = [b for b in backends if importlib.util.find_spec(b) is None]
    if missing:
        raise UserError(
            f"backend {missing[0]} is not installed; install it with `{INSTALL[missing[0]]}`"
        )
    if args.mirrored and "tensorflow" not in backends:
        raise UserError(
            "--mirrored times TensorFlow's MirroredStrategy: add tensorflow to --backends"
        )
    if args.mirrored and args.batch_size % args.mirrored:
        raise UserError(
            f"--batch-size {args.batch_size} must be a multiple of the {args.mirrored} --mirrored replicas"
        )
    if args.data and not Path(args.data).exists():
        raise UserError(f"{args.data}: no such file or folder")
    serve_missing = [m for m in args.serve if not Path(m).exists()]
    if serve_missing:
        raise UserError(f"{serve_missing[0]}: no such file or folder")
    out = Path(args.out or f"runs/bench-{datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty; pick a new --out")
    out.mkdir(parents=True, exist_ok=True)

    flags = [
        "--precisions",
        ",".join(args.precisions),
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
        "--batch-size",
        str(args.batch_size),
        "--jit",
        args.jit,
        "--pipeline",
        args.pipeline,
        "--steps-per-execution",
        str(args.steps_per_execution),
        "--matmul-size",
        str(args.matmul_size),
    ] + (["--data", args.data] if args.data else [])
    started = datetime.now().isoformat(timespec="seconds")
    load_start = os.getloadavg()
    state = git_state()
    commit = state["commit"] and state["commit"][:7] + ("+dirty" if state["dirty"] else "")
    children = [(backend, backend, []) for backend in backends]
    if args.mirrored:
        children.append(
            (
                f"tensorflow-mirrored{args.mirrored}",
                "tensorflow",
                ["--mirrored", str(args.mirrored)],
            )
        )
    results = {}
    for name, backend, extra in [] if args.rounds_only else children:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        env = {**os.environ, "KERAS_BACKEND": backend}
        results[name] = run_child(
            [
                sys.executable,
                "-m",
                "keras_ultimus.bench",
                *flags,
                *extra,
                *(["-v"] if args.verbose else []),
            ],
            env,
            out,
            name,
        )
    plain = None if args.rounds_only else plain_torch(args, out)

    serving = {}
    if args.serve:
        from keras_ultimus.benchmark import speed
        from keras_ultimus.serving.loading import load_predictor

        for model in args.serve:
            serving[model] = speed.serving_speed(load_predictor(model), args.calls, args.batches)

    rounds = None
    if args.rounds:
        rounds = interleaved(args, backends)
    table = rows(results, plain)
    write_csv(table, out / "bench.csv")
    command = "python -m keras_ultimus.bench " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    info = {
        "command": command,
        "started": started,
        "finished": datetime.now().isoformat(timespec="seconds"),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "commit": commit,
        "backends": results,
        "plain_torch": plain,
        "serving": serving,
        "rounds": rounds,
    }
    (out / "bench.json").write_text(json.dumps(info, indent=1))
    header = (
        f"Command: `{command}`  \nMachine: {info['machine']['processor']}, {os.cpu_count()} CPUs; "
        f"load average {load_start[0]:.1f} at start, {info['load_average_end'][0]:.1f} at end; "
        f"commit {info['commit']}"
    )
    if results:  # --rounds-only: the rounds' section gives each worker's versions
        header += "  \nVersions: " + "; ".join(
            f"{b}: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items())
            for b, r in results.items()
        )
    text = (markdown(table, serving, header) if results or serving else header + "\n") + (
        rounds_markdown(rounds) if rounds else ""
    )
    (out / "bench.md").write_text(text)
    written = ["bench.csv", "bench.md"]
    if table and results:
        chart(table, out / "bench.png")
        written.append("bench.png")
    if rounds and any("ratio" in row for row in rounds["table"]):
        rounds_chart(rounds, out / "rounds.png")
        written.append("rounds.png")
    print(text)
    print(f"wrote {out}/" + ", ".join([*written, "bench.json"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The bench's child processes: one backend's measurement, the rounds worker, plain PyTorch, and the rounds."""

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from keras_ultimus.backend import INSTALL, prepare
from keras_ultimus.benchmark.results import run_child, versions

PLAIN_TORCH = Path(__file__).resolve().parents[2] / "benchmarks" / "plain_torch.py"


def installed_backends() -> list[str]:
    """The Keras backends importable here, without importing them."""
    return [name for name in INSTALL if importlib.util.find_spec(name) is not None]


def worker(args: argparse.Namespace) -> int:
    """Measure the current backend in this process and write the figures as JSON to `args.worker`."""
    prepare(verbose=args.verbose)
    from keras_ultimus.benchmark import speed
    from keras_ultimus.training import distribute

    plan = (
        distribute.setup("mirrored", args.mirrored) if args.mirrored else None
    )  # before any tensor exists
    images = labels = None
    if args.data:
        from keras_ultimus.datasets.cifar10 import load_cifar10

        (images, labels), _ = load_cifar10(args.data)
    result = speed.measure_backend(
        args.precisions,
        args.batch_size,
        args.steps,
        args.repeats,
        args.jit,
        args.pipeline,
        args.steps_per_execution,
        images,
        labels,
        args.matmul_size,
        plan,
    )
    result["versions"] = versions()
    Path(args.worker).write_text(json.dumps(result, indent=1))
    return 0


def interleaved(args: argparse.Namespace, backends: list[str]) -> dict:
    """The training-step comparison in interleaved rounds: one worker per backend, plain PyTorch beside them."""
    from keras_ultimus.benchmark.rounds import ratios, run_rounds

    common = ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    workers = [
        (
            f"keras-{b}",
            [sys.executable, "-m", "keras_ultimus.bench", "--rounds-worker", *common],
            {**os.environ, "KERAS_BACKEND": b},
        )
        for b in backends
    ]
    if args.plain_torch and importlib.util.find_spec("torch") and PLAIN_TORCH.exists():
        workers.insert(
            0,
            (
                "plain-torch",
                [sys.executable, str(PLAIN_TORCH), "--rounds-worker", *common],
                dict(os.environ),
            ),
        )
    result = run_rounds(
        workers, args.rounds, log=lambda line: print(line, file=sys.stderr, flush=True)
    )
    result["table"] = ratios(result, "plain-torch-eager")
    result["compiled_ratio"] = ratios(result, "plain-torch-compiled")
    return result


def rounds_markdown(rounds: dict) -> str:
    """The interleaved rounds as a Markdown table: img/s and the ratios to both plain PyTorch paths."""
    lines = [
        f"\n## Training steps in {len(rounds['rounds'])} interleaved rounds\n",
        "| path | img/s (median) | × plain PyTorch eager: median (min–max) | × plain PyTorch compiled |",
        "|---|---:|---:|---:|",
    ]
    for row, other in zip(rounds["table"], rounds["compiled_ratio"]):
        eager = (
            f"{row['ratio']:.2f} ({row['ratio_min']:.2f}–{row['ratio_max']:.2f})"
            if "ratio" in row
            else "–"
        )
        compiled = f"{other['ratio']:.2f}" if "ratio" in other else "–"
        lines.append(f"| {row['path']} | {row['img_s']:.0f} | {eager} | {compiled} |")
    lines.append(
        "\nWarm-up (first steps, compilation included), seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in rounds["warmup_s"].items())
    )
    lines.append(
        "\nVersions: "
        + "; ".join(
            f"{w}: " + ", ".join(f"{k} {v}" for k, v in found.items())
            for w, found in rounds["versions"].items()
        )
    )
    return "\n".join(lines) + "\n"


def rounds_worker(args: argparse.Namespace) -> int:
    """Serve the interleaved rounds for this process's backend (eager and compiled on torch)."""
    prepare(verbose=args.verbose)
    import keras

    from keras_ultimus.benchmark.rounds import KERAS_PATHS, keras_worker

    backend = keras.backend.backend()
    modes = {
        k: KERAS_PATHS[k] for k in (("eager", "compiled") if backend == "torch" else ("default",))
    }
    keras_worker(backend, args.batch_size, args.steps, modes)
    return 0


def plain_torch(args: argparse.Namespace, out: Path) -> dict | None:
    """Time benchmarks/plain_torch.py (the external reference) in a child process, where torch and it are there."""
    if args.plain_torch and importlib.util.find_spec("torch") and PLAIN_TORCH.exists():
        print("measuring plain PyTorch ...", file=sys.stderr, flush=True)
        return run_child(
            [
                sys.executable,
                str(PLAIN_TORCH),
                "--batch-size",
                str(args.batch_size),
                "--steps",
                str(args.steps),
                "--repeats",
                str(args.repeats),
            ],
            dict(os.environ),
            out,
            "plain_torch",
        )
    elif args.plain_torch:
        print(
            "plain PyTorch reference skipped: needs torch and benchmarks/plain_torch.py (a source checkout)",
            file=sys.stderr,
        )
    return None


def rounds_chart(rounds: dict, path: Path) -> None:
    """Each path's ratio to plain PyTorch eager: the median over rounds as a bar, the rounds' range as a whisker."""
    from matplotlib.figure import Figure

    from keras_ultimus.plotting import save_png

    table = [row for row in rounds["table"] if "ratio" in row]
    fig = Figure(figsize=(7, 0.45 * len(table) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    y = range(len(table))
    medians = [row["ratio"] for row in table]
    spread = [
        [m - row["ratio_min"] for m, row in zip(medians, table)],
        [row["ratio_max"] - m for m, row in zip(medians, table)],
    ]
    ax.barh(y, medians, xerr=spread, color="tab:blue", capsize=3)
    for i, row in enumerate(table):
        ax.annotate(
            f" {row['ratio']:.2f}× ({row['img_s']:.0f} img/s)",
            (row["ratio_max"], i),
            va="center",
            fontsize=7,
        )
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_yticks(list(y), [row["path"] for row in table], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(row["ratio_max"] for row in table) * 1.35)
    ax.set_xlabel(
        f"× plain PyTorch eager (median of {len(rounds['rounds'])} interleaved rounds; whiskers: min–max)"
    )
    save_png(fig, path, dpi=120)

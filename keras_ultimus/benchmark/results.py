"""Bench results: measuring child processes, the medians table, its Markdown and its chart."""

import csv
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from keras_ultimus.errors import UserError

CSV_FIELDS = (
    "backend",
    "precision",
    "measure",
    "img_s",
    "repeats",
    "gflop_per_img",
    "peak_gflops",
    "fraction_of_peak",
    "vs_plain_torch",
)


def versions() -> dict:
    """Versions of the libraries loaded in this process."""
    found = {"python": platform.python_version()}
    import keras

    for name in ("keras", keras.backend.backend(), "numpy"):
        if name in sys.modules:
            found[name] = getattr(sys.modules[name], "__version__", "?")
    return found


def run_child(command: list[str], env: dict, out: Path, name: str) -> dict:
    """Run one measuring subprocess, its log in `out/<name>.log`; return its JSON, or raise UserError."""
    log = out / f"{name}.log"
    result = out / f"{name}.json"
    with open(log, "w") as f:
        code = subprocess.run(
            command + ["--json" if name == "plain_torch" else "--worker", str(result)],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        ).returncode
    if code or not result.exists():
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        raise UserError(
            f"{name} bench failed (exit {code}): {lines[-1] if lines else 'no output'}; see {log}"
        )
    return json.loads(result.read_text())


def rows(results: dict, plain: dict | None) -> list[dict]:
    """One CSV row per (backend, precision, measure), medians, with the fraction of the peak and the torch ratio."""
    from keras_ultimus.benchmark.speed import COMPUTE_DTYPE

    out = []
    plain_fp32 = statistics.median(plain["train_img_s"]) if plain else None
    for backend, r in results.items():
        from_peak = r["peak_gflops"]
        out.append(
            dict(
                backend=backend,
                precision=r.get("pipeline", "-"),
                measure="pipeline",
                img_s=statistics.median(r["pipeline_img_s"]),
                repeats=len(r["pipeline_img_s"]),
            )
        )
        for precision, p in r["precisions"].items():
            dtype = COMPUTE_DTYPE[precision]
            gflop = p["training_flops"] / 1e9
            train = statistics.median(p["train_img_s"])
            out.append(
                dict(
                    backend=backend,
                    precision=precision,
                    measure="train",
                    img_s=train,
                    repeats=len(p["train_img_s"]),
                    gflop_per_img=gflop,
                    peak_gflops=from_peak[dtype],
                    fraction_of_peak=train * gflop / from_peak[dtype],
                    vs_plain_torch=train / plain_fp32
                    if plain_fp32 and precision == "float32"
                    else None,
                )
            )
            out.append(
                dict(
                    backend=backend,
                    precision=precision,
                    measure="eval",
                    img_s=statistics.median(p["eval_img_s"]),
                    repeats=len(p["eval_img_s"]),
                )
            )
    if plain:
        gflop = plain["training_flops"] / 1e9
        out.append(
            dict(
                backend="plain_torch",
                precision="float32",
                measure="train",
                img_s=plain_fp32,
                repeats=len(plain["train_img_s"]),
                gflop_per_img=gflop,
            )
        )
    return out


def markdown(table: list[dict], serving: dict, header: str) -> str:
    """The bench table (and the serving table) as Markdown."""

    def num(value, fmt):
        return "" if value is None else format(value, fmt)

    lines = [
        header,
        "",
        "| backend | precision (pipeline) | measure | img/s (median) | GFLOP/img | peak GFLOP/s | of peak "
        "| × plain PyTorch |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['measure']} | {r['img_s']:,.0f} | "
            f"{num(r.get('gflop_per_img'), '.3f')} | {num(r.get('peak_gflops'), ',.0f')} | "
            f"{num(r.get('fraction_of_peak'), '.0%')} | {num(r.get('vs_plain_torch'), '.2f')} |"
        )
    if serving:
        lines += [
            "",
            "| model | batch-1 median ms | batch-1 p90 ms | batch-256 img/s |",
            "|---|---:|---:|---:|",
        ]
        for model, s in serving.items():
            lines.append(
                f"| {model} | {s['latency_ms_median']:.2f} | {s['latency_ms_p90']:.2f} | {s['throughput_img_s']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def chart(table: list[dict], path: Path) -> None:
    """A bar chart of training and evaluation img/s per backend and precision."""
    from matplotlib.figure import Figure

    from keras_ultimus.plotting import save_png

    bars = [r for r in table if r["measure"] in ("train", "eval")]
    fig = Figure(figsize=(max(6, 0.9 * len(bars)), 4), layout="constrained")
    ax = fig.add_subplot()
    colors = {"train": "tab:blue", "eval": "tab:orange"}
    labels = [
        f"{r['backend']}\n{r['precision'].replace('mixed_', '')}\n{r['measure']}" for r in bars
    ]
    ax.bar(range(len(bars)), [r["img_s"] for r in bars], color=[colors[r["measure"]] for r in bars])
    for i, r in enumerate(bars):
        note = f"{r['img_s']:,.0f}" + (
            f"\n{r['fraction_of_peak']:.0%} peak" if r.get("fraction_of_peak") else ""
        )
        ax.annotate(note, (i, r["img_s"]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(bars)), labels, fontsize=7)
    ax.set_ylabel("images per second (median)")
    ax.set_title("Ultimus training (blue) and evaluation (orange) speed")
    save_png(fig, path, dpi=120)


def write_csv(table: list[dict], path: Path) -> None:
    """The table as CSV, one row per (backend, precision, measure)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(table)

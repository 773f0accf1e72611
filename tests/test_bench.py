"""Tests for the speed bench: FLOP counting, the report tables and chart, the serving timer, the CLI."""

import csv
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from keras_ultimus import bench
from keras_ultimus.benchmark import results, speed
from keras_ultimus.models.ultimus import build_model

ROOT = Path(__file__).resolve().parents[1]


def einsum_flops(subscripts: str, *shapes: tuple[int, ...]) -> int:
    """FLOPs of an einsum: the product of every index's size, ×2 when an index is summed (multiply-add).

    Contractions are checked against NumPy's own (rounded) naive FLOP count from `np.einsum_path`.
    """
    inputs, output = subscripts.split("->")
    sizes = {i: n for term, shape in zip(inputs.split(","), shapes) for i, n in zip(term, shape)}
    flops = int(np.prod(list(sizes.values()), dtype=np.int64)) * (
        2 if set(sizes) - set(output) else 1
    )
    if not set(sizes) - set(output):
        return flops
    report = np.einsum_path(subscripts, *(np.empty(s, np.float32) for s in shapes), optimize=False)[
        1
    ]
    numpy_count = float(
        next(line for line in report.splitlines() if "Naive FLOP count" in line).split(":")[1]
    )
    assert flops == pytest.approx(numpy_count, rel=1e-3)
    return flops


def hand_count(widths: tuple[int, ...], blocks: int, key_dim: int, classes: int = 10) -> int:
    """Forward FLOPs per image of build_model(...), counted from NumPy windows and einsum paths."""
    flops, x = 0, np.empty((1, 32, 32, 3), np.float32)
    for width in widths:
        windows = np.lib.stride_tricks.sliding_window_view(
            x, (3, 3), axis=(1, 2)
        )  # (1, h, w, c, 3, 3)
        flops += einsum_flops("nhwcij,ijco->nhwo", windows.shape, (3, 3, x.shape[-1], width))
        x = np.empty((1, *windows.shape[1:3], width), np.float32)
    f, d = widths[-1], key_dim
    per_block = (
        3 * einsum_flops("bf,fd->bd", (1, f), (f, d))  # q, k, v
        + einsum_flops("bi,bj->bij", (1, d), (1, d))  # q ⊗ k
        + einsum_flops("bi,bij->bj", (1, d), (1, d, d))  # v · AM
        + einsum_flops("bd,df->bf", (1, d), (d, f))
    )  # output projection
    return flops + blocks * per_block + einsum_flops("bf,fc->bc", (1, f), (f, classes))


@pytest.mark.multi_backend
@pytest.mark.parametrize(
    "widths, blocks, key_dim", [((2, 3, 4), 1, 4), ((32, 256, 48), 4, 8), ((5, 7), 2, 3)]
)
def test_flops_match_an_independent_numpy_count(widths, blocks, key_dim):
    model = build_model(num_blocks=blocks, key_dim=key_dim, conv_widths=widths)
    assert speed.forward_flops(model) == hand_count(widths, blocks, key_dim)
    assert speed.training_flops(model) == 3 * hand_count(widths, blocks, key_dim)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_plain_torch_reference_counts_the_same_flops_and_parameters():
    spec = importlib.util.spec_from_file_location(
        "plain_torch", ROOT / "benchmarks" / "plain_torch.py"
    )
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    model = build_model()
    assert plain.training_flops() == speed.training_flops(model) == 800_085_312
    torch_params = sum(p.numel() for p in plain.build().parameters())
    assert torch_params == sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 192_778


@pytest.mark.multi_backend
def test_matmul_peak_is_positive_for_fp32_and_bf16():
    for dtype in ("float32", "bfloat16"):
        assert speed.matmul_peak(dtype, n=64, repeats=2) > 0


def fake_results() -> tuple[dict, dict]:
    backend = {
        "peak_gflops": {"float32": 400.0, "bfloat16": 800.0},
        "pipeline": "tfdata",
        "pipeline_img_s": [9000.0, 10000.0, 11000.0],
        "precisions": {
            "float32": {
                "train_img_s": [290.0, 100.0, 300.0],
                "eval_img_s": [900.0, 1000.0, 950.0],
                "training_flops": 800_000_000,
            },
            "mixed_bfloat16": {
                "train_img_s": [400.0, 500.0, 450.0],
                "eval_img_s": [1.0, 2.0, 3.0],
                "training_flops": 800_000_000,
            },
        },
        "versions": {"keras": "3"},
    }
    return {"tensorflow": backend}, {
        "train_img_s": [100.0, 120.0, 140.0],
        "training_flops": 800_000_000,
    }


def test_rows_report_medians_fraction_of_peak_and_ratio_to_plain_torch():
    table = {(r["backend"], r["precision"], r["measure"]): r for r in results.rows(*fake_results())}
    fp32 = table["tensorflow", "float32", "train"]
    assert fp32["img_s"] == 290.0 and fp32["repeats"] == 3
    assert fp32["fraction_of_peak"] == pytest.approx(290 * 0.8 / 400)
    assert fp32["vs_plain_torch"] == pytest.approx(290 / 120)
    bf16 = table["tensorflow", "mixed_bfloat16", "train"]
    assert (
        bf16["fraction_of_peak"] == pytest.approx(450 * 0.8 / 800)
        and bf16["vs_plain_torch"] is None
    )
    assert table["tensorflow", "tfdata", "pipeline"]["img_s"] == 10000.0
    assert table["tensorflow", "float32", "eval"]["img_s"] == 950.0
    assert table["plain_torch", "float32", "train"]["img_s"] == 120.0


def test_train_speed_times_every_step_and_refuses_data_that_runs_out():
    from keras_ultimus.training.compiling import compile_model

    images, labels = speed.synthetic_cifar(8 * 2 * 3)
    model = build_model(conv_widths=(4, 8), num_blocks=1)
    compile_model(model, 1e-3, total_steps=6)
    assert (
        len(
            speed.train_speed(
                model, images, labels, steps=2, repeats=2, batch_size=8, pipeline="numpy"
            )
        )
        == 2
    )
    compile_model(model, 1e-3, total_steps=6)
    with pytest.raises(RuntimeError, match="expected 6"):  # 5 of the 6 batches
        speed.train_speed(
            model, images[:40], labels[:40], steps=2, repeats=2, batch_size=8, pipeline="numpy"
        )


def test_markdown_and_chart_show_every_row(tmp_path):
    table = results.rows(*fake_results())
    text = results.markdown(
        table,
        {"m.onnx": {"latency_ms_median": 0.5, "latency_ms_p90": 0.7, "throughput_img_s": 2000}},
        "H",
    )
    assert "| tensorflow | float32 | train | 290 | 0.800 | 400 | 58% | 2.42 |" in text
    assert "| m.onnx | 0.50 | 0.70 | 2,000 |" in text
    results.chart(table, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serving_speed_times_batch_1_and_batch_256_calls():
    shapes = []

    def slow(images):
        shapes.append(images.shape)
        time.sleep(0.002 if len(images) == 1 else 0.02)
        return np.zeros((len(images), 10), np.float32)

    r = speed.serving_speed(slow, calls=10, batches=3, warmup=1)
    assert shapes.count((1, 32, 32, 3)) == 1 + 10 and shapes.count((256, 32, 32, 3)) == 1 + 3
    assert 2 <= r["latency_ms_median"] <= r["latency_ms_p90"] < 50
    assert 256 / 0.2 < r["throughput_img_s"] <= 256 / 0.02


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "argument --steps: expected a positive integer, got 0"),
        (["--precisions", "float64"], "argument --precisions: float64 is not one of"),
        (["--backends", "theano"], "argument --backends: theano is not one of"),
        (["--jit", "maybe"], "argument --jit: invalid choice"),
    ],
)
def test_bad_flags_exit_2_with_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    assert bench.main(["--serve", str(tmp_path / "nothing"), "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing'}: no such file or folder\n"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "bench.csv").write_text("x")
    assert bench.main(["--out", str(tmp_path / "full")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'full'} already exists")
    assert bench.main(["--backends", "torch", "--mirrored", "2", "--out", str(tmp_path / "m")]) == 2
    assert (
        capsys.readouterr().err
        == "error: --mirrored times TensorFlow's MirroredStrategy: add tensorflow to --backends\n"
    )
    assert (
        bench.main(["--backends", "tensorflow", "--mirrored", "3", "--out", str(tmp_path / "m")])
        == 2
    )
    assert (
        capsys.readouterr().err
        == "error: --batch-size 512 must be a multiple of the 3 --mirrored replicas\n"
    )


@pytest.mark.slow
def test_tiny_bench_run_writes_csv_markdown_and_chart_and_times_two_mirrored_replicas(tmp_path):
    """One bench run (each run costs a process per path): TensorFlow, two mirrored replicas, plain PyTorch."""
    out = tmp_path / "bench"
    argv = [
        "--backends",
        "tensorflow",
        "--mirrored",
        "2",
        "--precisions",
        "float32",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--batch-size",
        "8",
        "--matmul-size",
        "64",
        "--rounds",
        "0",
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "keras_ultimus.bench", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "bench.csv") as f:
        table = {(r["backend"], r["precision"], r["measure"]): r for r in csv.DictReader(f)}
    assert set(table) >= {("tensorflow", "float32", "train"), ("tensorflow", "float32", "eval")}
    assert [k[1] for k in table if k[0] == "tensorflow" and k[2] == "pipeline"] in (
        ["tfdata"],
        ["numpy"],
    )
    train = table["tensorflow", "float32", "train"]
    assert float(train["img_s"]) > 0 and float(train["gflop_per_img"]) == pytest.approx(0.800085312)
    assert float(train["fraction_of_peak"]) == pytest.approx(
        float(train["img_s"]) * float(train["gflop_per_img"]) / float(train["peak_gflops"]),
        rel=1e-6,
    )
    if importlib.util.find_spec("torch"):
        assert float(train["vs_plain_torch"]) > 0 and ("plain_torch", "float32", "train") in table
    assert "| tensorflow | float32 | train |" in (out / "bench.md").read_text()
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"

    mirrored = table["tensorflow-mirrored2", "float32", "train"]
    assert float(mirrored["img_s"]) > 0
    results = json.loads((out / "bench.json").read_text())["backends"]
    assert results["tensorflow"]["distribute"] == {"mode": "none", "replicas": 1, "processes": 1}
    assert results["tensorflow-mirrored2"]["distribute"] == {
        "mode": "mirrored",
        "replicas": 2,
        "processes": 1,
    }
    assert results["tensorflow-mirrored2"]["peak_gflops"]["float32"] > 0


def test_rounds_only_report_gives_each_workers_versions_and_no_empty_header(tmp_path, monkeypatch):
    from keras_ultimus.benchmark.rounds import ratios

    def fake_interleaved(args, backends):
        result = {
            "rounds": [{"plain-torch-eager": 100.0, "keras-torch-eager": 120.0}] * 2,
            "warmup_s": {"plain-torch-eager": 1.0, "keras-torch-eager (jit_compile=False)": 2.0},
            "versions": {"plain-torch": {"torch": "9.9"}, "keras-torch": {"keras": "3.99"}},
        }
        compiled = ratios(result, "plain-torch-compiled")
        return {**result, "table": ratios(result, "plain-torch-eager"), "compiled_ratio": compiled}

    monkeypatch.setattr(bench, "interleaved", fake_interleaved)
    out = tmp_path / "bench"
    argv = ["--rounds-only", "--rounds", "2", "--backends", "tensorflow", "--out", str(out)]
    assert bench.main(argv) == 0
    text = (out / "bench.md").read_text()
    assert "Versions: plain-torch: torch 9.9; keras-torch: keras 3.99" in text
    assert [line for line in text.splitlines() if line.strip() == "Versions:"] == []
    assert "| keras-torch-eager | 120 | 1.20 (1.20–1.20) | – |" in text
    assert (out / "rounds.png").read_bytes()[:4] == b"\x89PNG" and not (out / "bench.png").exists()

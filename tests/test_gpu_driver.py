"""The GPU driver (benchmarks/gpu.py): its pure helpers, time limit, and a dry run of the search and confirm stages."""

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from benchmarks import gpu

ROOT = Path(__file__).resolve().parents[1]


def test_stages_parse_in_the_given_order_and_unknown_ones_are_refused():
    assert gpu.parse_stages("search,bench") == ["search", "bench"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown stage 'trian'"):
        gpu.parse_stages("bench,trian")
    assert gpu.parse_depths("1,8") == [1, 8]
    for bad in ("0", "9", "1,,2", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            gpu.parse_depths(bad)


def test_a_bad_flag_is_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        gpu.main(["--stages", "bench,nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown stage 'nope'" in err


def test_models_fill_the_first_archive_then_the_second_then_are_dropped():
    models = [(Path(f"m{i}"), 6) for i in range(5)]
    first, second, dropped = gpu.select_models(base=4, models=models, limit=16)
    assert first == [Path("m0"), Path("m1")]  # 4 + 6 + 6 = 16
    assert second == [Path("m2"), Path("m3")]
    assert dropped == [Path("m4")]
    assert gpu.model_rank(Path("w/train-torch/model.keras")) < gpu.model_rank(Path("w/confirm-2/model.keras")) \
        < gpu.model_rank(Path("w/bf16-float32/model.keras")) < gpu.model_rank(Path("w/depth-3/model.keras"))


def trial_values(blocks: int, widths: tuple[int, ...]) -> dict:
    values = {"num_blocks": blocks, "key_dim": 8, "scale": "pre", "residual": False, "max_lr": 0.003,
              "num_convs": len(widths), "tuner/epochs": 2}
    values |= {f"conv{i}_width": w for i, w in enumerate(widths, 1)}
    return values | {f"down{i}": "none" for i in range(1, len(widths))}


def test_top_configs_are_best_json_then_distinct_completed_trials_by_score(tmp_path):
    from keras_ultimus.tuner.search import best_config

    trials = {"0000": (trial_values(2, (16, 32)), 0.5, "COMPLETED"), "0001": (trial_values(3, (16, 16)), 0.7,
              "COMPLETED"), "0002": (trial_values(3, (16, 16)), 0.6, "COMPLETED"),  # 0001 again, shorter
              "0003": (trial_values(1, (8, 8)), 0.9, "FAILED"), "0004": (trial_values(4, (8, 8)), 0.4, "COMPLETED")}
    rows = ["trial_id,status,best_val_accuracy"]
    for trial_id, (values, score, status) in trials.items():
        (tmp_path / f"trial_{trial_id}").mkdir()
        (tmp_path / f"trial_{trial_id}" / "trial.json").write_text(json.dumps({"hyperparameters": {"values": values}}))
        rows.append(f"{trial_id},{status},{score}")
    (tmp_path / "leaderboard.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "best.json").write_text(json.dumps(best_config(trials["0001"][0], {"batch_size": 64})))
    top = gpu.top_configs(tmp_path)
    assert [c["num_blocks"] for c in top] == [3, 2, 4]
    assert top[1] == {**best_config(trials["0000"][0], {"batch_size": 64})} and top[1]["conv_widths"] == [16, 32]
    assert all(c["batch_size"] == 64 for c in top)


def test_a_run_is_not_started_near_the_limit_and_interrupted_at_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "GRACE", 1)  # the last second of the limit starts nothing
    args = gpu.build_parser().parse_args(["--dry-run", "--out", str(tmp_path / "out"), "--time-limit", "3"])
    s = gpu.Session(args)
    start = time.time()
    assert gpu.run_limited(s, "sleeper", ["-c", "import time; time.sleep(120)"]) == "late"
    assert 2 < time.time() - start < 15
    assert gpu.run_limited(s, "late", ["-c", "pass"]) == "late"  # under 30 s left: not started
    assert s.failed == ["sleeper (time limit)", "late (time limit)"]
    assert "not started" in (s.out / "steps.txt").read_text()


@pytest.mark.slow
def test_dry_run_of_search_and_confirm_packs_the_results_and_resumes(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "benchmarks.gpu", "--dry-run", "--stages", "search,confirm", "--depths", "1",
               "--out", str(out)]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["data.txt", "gpu-results.tar.gz", "steps.txt", "summary.txt", "versions.txt"]
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
    assert {"packed.txt", "search/best.json", "confirm/top1.json", "confirm/depth.csv", "confirm-1/run.json",
            "confirm-1/model.keras"} <= set(names)
    assert not any(part in ("backup", "tensorboard", "dry-run-data") for n in names for part in Path(n).parts)
    assert "tensorflow missing" in (out / "versions.txt").read_text()
    assert "PARTIAL data" in (out / "data.txt").read_text()
    summary = (out / "summary.txt").read_text()
    assert "== confirm" in summary and "top1:" in summary and "depth 1:" in summary
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "search: finished on an earlier call, kept" in second.stderr
    assert "confirm-1: finished on an earlier call, kept" in second.stderr

"""The GPU driver (benchmarks/): its specs, flags, runner and stages, and a dry run of the search and confirm stages."""

import argparse
import dataclasses
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import confirm, driver, experiments, gpu, results, runner, stages
from tools.transport import packing

ROOT = Path(__file__).resolve().parents[1]


def test_stages_parse_in_the_given_order_and_unknown_ones_are_refused():
    assert driver.parse_stages("search,bench") == ["search", "bench"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown stage 'trian'"):
        driver.parse_stages("bench,trian")
    assert driver.parse_depths("1,8") == [1, 8]
    for bad in ("0", "9", "1,,2", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            driver.parse_depths(bad)


def test_a_bad_flag_is_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        gpu.main(["--stages", "bench,nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown stage 'nope'" in err


def test_models_fill_the_first_archive_then_the_second_then_are_dropped():
    models = [(Path(f"m{i}"), 6) for i in range(5)]
    first, second, dropped = packing.select_models(base=4, models=models, limit=16)
    assert first == [Path("m0"), Path("m1")]  # 4 + 6 + 6 = 16
    assert second == [Path("m2"), Path("m3")]
    assert dropped == [Path("m4")]
    assert (
        experiments.model_rank(Path("w/train-torch/model.keras"))
        < experiments.model_rank(Path("w/confirm-2/model.keras"))
        < experiments.model_rank(Path("w/bf16-float32/model.keras"))
        < experiments.model_rank(Path("w/depth-3/model.keras"))
    )


def test_the_experiments_are_data_runs_with_names_and_flags_that_start_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    fixed = [
        *experiments.TIMED,
        *experiments.BF16,
        *experiments.DEFAULT_SEEDS,
        *experiments.RECIPE_SEEDS,
        *experiments.REPRO,
    ]
    configs, ablation = experiments.ablation_runs([0, 1])
    assert all(isinstance(r, experiments.Run) for r in fixed + ablation)
    assert all(isinstance(flag, str) for r in fixed + ablation for flag in r.flags)
    names = [r.name for r in fixed + ablation]
    assert len(set(names)) == len(names)
    json.dumps([dataclasses.asdict(r) for r in fixed + ablation])  # plain data, all of it
    with pytest.raises(dataclasses.FrozenInstanceError):
        fixed[0].flags = ("--epochs", "1")
    assert {r.config for r in ablation} == set(configs) == set(experiments.ARMS)
    assert [r.name for r in ablation[: len(experiments.ARMS)]] == [
        f"ablation-{arm}-s0" for arm in experiments.ARMS
    ]
    assert not list(tmp_path.iterdir())  # building the specs wrote nothing


def test_the_confirm_spec_trains_the_best_configs_own_depth_once():
    best = {"num_blocks": 2, "residual": False, "batch_size": 64}
    configs, runs, depths = experiments.confirm_runs([best, {**best, "num_blocks": 3}], [1, 2], [0])
    assert depths == {
        (1, False): "depth-1-plain",
        (1, True): "depth-1-residual",
        (2, False): "confirm-1",
        (2, True): "depth-2-residual",
    }
    assert [r.name for r in runs] == [
        "confirm-1",
        "confirm-2",
        "depth-1-plain",
        "depth-1-residual",
        "depth-2-residual",
    ]
    assert configs["top1"] == {**best, "tta": "flip"}
    assert configs["depth-1-residual"] == {**best, "tta": "flip", "num_blocks": 1, "residual": True}


def test_a_run_on_carved_data_is_marked_and_called_held_out_never_test(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    s = runner.Session(
        driver.build_parser().parse_args(["--dry-run", "--out", str(tmp_path / "o")])
    )

    def finish(s, name, command, backend="torch"):
        folder = s.work / name
        folder.mkdir()
        (folder / "log.csv").write_text(
            "epoch,loss,accuracy,val_loss,val_accuracy\n0,1,0.2,1,0.25\n1,1,0.4,1,0.5\n"
        )
        (folder / "run.json").write_text(
            json.dumps({"config": {"epochs": 2}, "finished": "now", "final": {"val_accuracy": 0.5}})
        )
        return "ok"

    monkeypatch.setattr(runner, "run_limited", finish)
    s.held_out = True
    runner.train_run(s, "carved", "torch", [])
    s.held_out = False
    runner.train_run(s, "whole", "torch", [])
    runner.train_run(s, "carved", "torch", [])  # kept: still held-out
    steps = (s.out / "steps.txt").read_text()
    assert "carved: done in" in steps and "held-out accuracy 0.5000" in steps
    assert "carved: finished on an earlier call, kept (held-out accuracy 0.5000)" in steps
    assert "whole: done in" in steps and "test accuracy 0.5000" in steps
    assert (s.work / "carved" / results.HELD_OUT).is_file()
    assert not (s.work / "whole" / results.HELD_OUT).exists()
    lines = results.seed_lines({0: s.work / "carved", 1: s.work / "whole"})
    assert lines[0].startswith("seed 0: final held-out accuracy 50.00%")
    assert lines[1].startswith("seed 1: final test accuracy 50.00%")
    assert results.splits([s.work / "carved", s.work / "whole"]) == "held-out"


def test_on_carved_data_no_stage_summary_calls_a_figure_a_test_accuracy(tmp_path, monkeypatch):
    s, _ = fake_session(tmp_path, monkeypatch, "--seeds", "1", held_out=True)
    for stage in (
        stages.stage_train,
        stages.stage_bf16,
        stages.stage_seeds,
        stages.stage_recipe,
        stages.stage_repro,
        stages.stage_ablation,
    ):
        stage(s)
    texts = {p.stem: p.read_text() for p in (s.work / "summary").glob("*.txt")}
    assert set(texts) == {"train", "bf16", "seeds", "recipe", "repro", "ablation"}
    assert not [name for name, text in texts.items() if "test accuracy" in text]
    assert "torch: held-out accuracy 0.6000" in texts["train"]
    assert "float32: seed 0, 2 epochs, final held-out accuracy 60.00%" in texts["bf16"]
    assert "--attention batch (held-out): 50.00% after epoch 1" in texts["repro"]


def test_the_driver_and_the_transport_import_without_keras_until_the_wheels_are_in():
    code = (
        "import sys; sys.modules['keras'] = sys.modules['keras_ultimus'] = None; "
        "import benchmarks.gpu, tools.transport.parts, tools.transport.wheels, tools.transport.packing"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def trial_values(blocks: int, widths: tuple[int, ...]) -> dict:
    values = {
        "num_blocks": blocks,
        "key_dim": 8,
        "scale": "pre",
        "residual": False,
        "max_lr": 0.003,
        "num_convs": len(widths),
        "tuner/epochs": 2,
    }
    values |= {f"conv{i}_width": w for i, w in enumerate(widths, 1)}
    return values | {f"down{i}": "none" for i in range(1, len(widths))}


def test_top_configs_are_best_json_then_distinct_completed_trials_by_score(tmp_path):
    from keras_ultimus.tuner.leaderboard import best_config

    trials = {
        "0000": (trial_values(2, (16, 32)), 0.5, "COMPLETED"),
        "0001": (trial_values(3, (16, 16)), 0.7, "COMPLETED"),
        "0002": (trial_values(3, (16, 16)), 0.6, "COMPLETED"),  # 0001 again, shorter
        "0003": (trial_values(1, (8, 8)), 0.9, "FAILED"),
        "0004": (trial_values(4, (8, 8)), 0.4, "COMPLETED"),
    }
    rows = ["trial_id,status,best_val_accuracy"]
    for trial_id, (values, score, status) in trials.items():
        (tmp_path / f"trial_{trial_id}").mkdir()
        (tmp_path / f"trial_{trial_id}" / "trial.json").write_text(
            json.dumps({"hyperparameters": {"values": values}})
        )
        rows.append(f"{trial_id},{status},{score}")
    (tmp_path / "leaderboard.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "best.json").write_text(
        json.dumps(best_config(trials["0001"][0], {"batch_size": 64}))
    )
    top = confirm.top_configs(tmp_path)
    assert [c["num_blocks"] for c in top] == [3, 2, 4]
    assert top[1] == {**best_config(trials["0000"][0], {"batch_size": 64})} and top[1][
        "conv_widths"
    ] == [16, 32]
    assert all(c["batch_size"] == 64 for c in top)


def test_a_run_is_not_started_near_the_limit_and_interrupted_at_it(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "GRACE", 1)  # the last second of the limit starts nothing
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # as Session would set it, undone after the test
    args = driver.build_parser().parse_args(
        ["--dry-run", "--out", str(tmp_path / "out"), "--time-limit", "3"]
    )
    s = runner.Session(args)
    start = time.time()
    assert runner.run_limited(s, "sleeper", ["-c", "import time; time.sleep(120)"]) == "late"
    assert 2 < time.time() - start < 15
    assert runner.run_limited(s, "late", ["-c", "pass"]) == "late"  # under 30 s left: not started
    assert s.failed == ["sleeper (time limit)", "late (time limit)"]
    assert "not started" in (s.out / "steps.txt").read_text()


def fake_session(
    tmp_path, monkeypatch, *flags: str, scores: dict | None = None, held_out: bool = False
) -> tuple[runner.Session, dict]:
    """A dry-run Session whose train_run writes a finished run folder at once; returns it and the flags of each run.

    `scores` maps a run name to its per-epoch accuracies (default: 0.5 then 0.6); with `held_out`, every run is
    marked as scored on a split carved from the training files, as the real train_run marks it.
    """
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    s = runner.Session(
        driver.build_parser().parse_args(["--dry-run", "--out", str(tmp_path / "out"), *flags])
    )
    started = {}

    def train_run(s, name, backend, flags):
        from keras_ultimus.training.run_config import default_config

        started[name] = flags
        config = (
            json.loads(Path(flags[flags.index("--config") + 1]).read_text())
            if "--config" in flags
            else default_config()
        )
        accs = (scores or {}).get(name, [0.5, 0.6])
        folder = s.work / name
        folder.mkdir(parents=True)
        (folder / "log.csv").write_text(
            "epoch,loss,accuracy,val_loss,val_accuracy\n"
            + "".join(f"{e},1.0,0.5,1.0,{a}\n" for e, a in enumerate(accs))
        )
        final = {"val_accuracy": accs[-1]} | (
            {"test_accuracy_flip_tta": accs[-1] + 0.01}
            if config.get("tta") in ("flip", "multicrop")  # train logs flip TTA under both
            else {}
        )
        (folder / "run.json").write_text(
            json.dumps(
                {"config": {**config, "epochs": len(accs)}, "finished": "now", "final": final}
            )
        )
        if held_out:
            results.mark_held_out(folder)

    monkeypatch.setattr(runner, "train_run", train_run)
    return s, started


def test_recipe_stage_trains_the_candidate_recipe_at_three_seeds_and_gives_mean_std_and_drops(
    tmp_path, monkeypatch
):
    curves = {
        "recipe-0": [0.3, 0.4, 0.5, 0.6, 0.55, 0.7],
        "recipe-1": [0.3, 0.2, 0.5, 0.6, 0.65, 0.72],
        "recipe-2": [0.3, 0.4, 0.5, 0.6, 0.7, 0.69],
    }
    s, started = fake_session(tmp_path, monkeypatch, scores=curves)
    stages.stage_recipe(s)
    assert sorted(started) == list(curves)
    assert all(
        f[: len(experiments.RECIPE)] == experiments.RECIPE and f[f.index("--seed") + 1] == name[-1]
        for name, f in started.items()
    )
    text = (s.work / "summary" / "recipe.txt").read_text()
    finals = np.array([c[-1] for c in curves.values()]) * 100
    assert f"mean ± std (n-1) of 3 seeds: {finals.mean():.2f} ± {finals.std(ddof=1):.2f}%" in text
    assert (
        "seed 0: final test accuracy 70.00%, largest drop after epoch 3 5.00 points (epoch 4->5)"
        in text
    )
    assert "seed 1: final test accuracy 72.00%, no drop after epoch 3" in text
    assert (
        "seed 2: final test accuracy 69.00%, largest drop after epoch 3 1.00 points (epoch 5->6)"
        in text
    )


def test_repro_stage_trains_each_attention_on_the_original_schedule_and_charts_them(
    tmp_path, monkeypatch
):
    from benchmarks.original import PUBLISHED_TEST_ACCURACY, TRAIN_FLAGS

    s, started = fake_session(tmp_path, monkeypatch, scores={"repro-batch": [0.2, 0.3, 0.25, 0.4]})
    stages.stage_repro(s)
    assert sorted(started) == ["repro-batch", "repro-elementwise", "repro-sample"]
    for name, flags in started.items():
        assert (
            flags[: len(TRAIN_FLAGS)] == TRAIN_FLAGS
            and flags[flags.index("--attention") + 1] == name[6:]
        )
    assert (
        TRAIN_FLAGS[:4] == ["--epochs", "24", "--batch-size", "512"]
        and PUBLISHED_TEST_ACCURACY[4] == 0.0821
    )
    text = (s.work / "summary" / "repro.txt").read_text()
    assert "--attention batch: 20.00% after epoch 1, 40.00% after epoch 4" in text
    assert "53.46% after epoch 1, 8.21% after epoch 4, 41.21% after epoch 24" in text
    assert (s.work / "repro" / "repro.png").stat().st_size > 10_000


def test_ablation_trains_each_arm_at_each_seed_and_compares_its_mean_with_the_base(
    tmp_path, monkeypatch
):
    scores = {
        "ablation-base-s0": [0.5, 0.88],
        "ablation-base-s1": [0.5, 0.90],
        "ablation-no-whiten-s0": [0.5, 0.86],
        "ablation-no-whiten-s1": [0.5, 0.87],
    }
    s, started = fake_session(tmp_path, monkeypatch, "--seeds", "2", scores=scores)
    stages.stage_ablation(s)
    assert set(started) == {
        f"ablation-{arm}-s{seed}" for arm in experiments.ARMS for seed in (0, 1)
    }
    assert all(
        name.endswith("-s0") for name in list(started)[: len(experiments.ARMS)]
    )  # every arm's seed 0 first
    for arm, change in experiments.ARMS.items():
        config = json.loads((s.work / "ablation" / f"{arm}.json").read_text())
        assert config == {**experiments.BEST_VARIANT, **change}
        assert sum(config[k] != experiments.BEST_VARIANT.get(k) for k in config) == (
            arm != "base"
        ) * len(change)
    text = (s.work / "summary" / "ablation.txt").read_text()
    assert (
        "  no-whiten: -2.50 / -2.50" in text
    )  # (86 + 87) / 2 - (88 + 90) / 2; TTA is plain + 1 in the fake
    assert "  ema: -29.00 / -29.00" in text  # the fake's default 0.6 against the base's 0.89


def test_confirm_trains_each_top_config_at_each_seed_and_each_depth_with_the_residual_on_and_off(
    tmp_path, monkeypatch
):
    from keras_ultimus.tuner.leaderboard import best_config

    s, started = fake_session(
        tmp_path,
        monkeypatch,
        "--seeds",
        "2",
        "--depths",
        "1,3",
        scores={"depth-1-residual": [0.5, 0.8]},
    )
    search = s.work / "search"
    trials = {"0000": trial_values(3, (16, 32)), "0001": trial_values(2, (16, 16))}
    for trial_id, values in trials.items():
        (search / f"trial_{trial_id}").mkdir(parents=True)
        (search / f"trial_{trial_id}" / "trial.json").write_text(
            json.dumps({"hyperparameters": {"values": values}})
        )
    (search / "leaderboard.csv").write_text(
        "trial_id,status,best_val_accuracy\n0000,COMPLETED,0.7\n0001,COMPLETED,0.6\n"
    )
    (search / "best.json").write_text(json.dumps(best_config(trials["0000"], {"batch_size": 64})))
    confirm.stage_confirm(s)
    # the best (3 blocks, residual off) is confirm-1 at depth 3; every other depth and residual is a depth run
    assert set(started) == {
        "confirm-1",
        "confirm-2",
        "confirm-1-s1",
        "confirm-2-s1",
        "depth-1-plain",
        "depth-1-residual",
        "depth-3-residual",
    }
    assert list(started)[:2] == ["confirm-1", "confirm-2"]  # every configuration's seed 0 first
    depth = json.loads((s.work / "confirm" / "depth-1-residual.json").read_text())
    top1 = json.loads((s.work / "confirm" / "top1.json").read_text())
    assert top1["tta"] == "flip" and top1["num_blocks"] == 3 and not top1["residual"]
    assert depth == {**top1, "num_blocks": 1, "residual": True}
    rows = (s.work / "confirm" / "depth.csv").read_text().splitlines()
    assert rows[0] == "blocks,residual,run,trainable_params,epochs,test_accuracy,held_out_accuracy"
    assert "1,True,depth-1-residual," in rows[2] and rows[2].endswith(",2,0.8000,")
    assert "3,False,confirm-1," in rows[3]
    text = (s.work / "summary" / "confirm.txt").read_text()
    assert "flip TTA: mean ± std (n-1) of 2 seeds: 61.00 ± 0.00%" in text
    assert "depth 1, residual on: 80.00% (depth-1-residual)" in text
    assert "scored on the test split" in text and "held-out" not in text
    assert (s.work / "confirm" / "depth.png").is_file()


def test_the_depth_table_puts_a_carved_runs_accuracy_in_the_held_out_column(tmp_path):
    from keras_ultimus.training.run_config import default_config

    for name, acc, carved in (("depth-1-plain", 0.4, True), ("confirm-1", 0.5, False)):
        (tmp_path / name).mkdir()
        info = {"config": {**default_config(), "epochs": 3}, "finished": "now"}
        (tmp_path / name / "run.json").write_text(
            json.dumps(info | {"final": {"val_accuracy": acc}})
        )
        if carved:
            results.mark_held_out(tmp_path / name)
    runs = {(1, False): "depth-1-plain", (2, False): "confirm-1", (3, False): "depth-3-plain"}
    rows = confirm.depth_rows(tmp_path, runs)
    assert [(r["test_accuracy"], r["held_out_accuracy"]) for r in rows] == [
        ("", "0.4000"),
        ("0.5000", ""),
        ("", ""),
    ]
    assert [confirm.row_accuracy(r) for r in rows] == ["0.4000", "0.5000", ""]
    confirm.write_depth(rows, tmp_path)
    assert (tmp_path / "depth.png").is_file()
    header = (tmp_path / "depth.csv").read_text().splitlines()[0]
    assert header.endswith(",epochs,test_accuracy,held_out_accuracy")


@pytest.mark.slow
def test_dry_run_of_search_and_confirm_packs_the_results_and_resumes(tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "benchmarks.gpu",
        "--dry-run",
        "--stages",
        "search,confirm",
        "--depths",
        "1",
        "--seeds",
        "1",
        "--out",
        str(out),
    ]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["data.txt", "gpu-results.tar.gz", "steps.txt", "summary.txt", "versions.txt"]
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
    assert {
        "packed.txt",
        "search/best.json",
        "confirm/top1.json",
        "confirm/depth.csv",
        "confirm-1/run.json",
        "confirm-1/model.keras",
    } <= set(names)
    assert not any(
        part in ("backup", "tensorboard", "dry-run-data") for n in names for part in Path(n).parts
    )
    assert "tensorflow missing" in (out / "versions.txt").read_text()
    assert "PARTIAL data" in (out / "data.txt").read_text()
    summary = (out / "summary.txt").read_text()
    assert "== confirm" in summary and "top1:" in summary and "depth 1, residual on:" in summary
    assert "depth 1, residual off:" in summary and '"space": "wide"' in summary
    # the dry run withholds the last part, so its test split is carved out of the training files
    assert "HELD-OUT images" in (out / "data.txt").read_text()
    assert "test accuracy" not in summary and "final held-out accuracy" in summary
    assert "confirm-1/held-out.txt" in names
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "search: finished on an earlier call, kept" in second.stderr
    assert "confirm-1: finished on an earlier call, kept" in second.stderr

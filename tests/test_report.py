"""report: tables carry the CSV's numbers, charts are written, saved models re-check, bad input exits 2 in one line."""

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from keras_ultimus.datasets.cifar10 import load_local
from keras_ultimus.models.ultimus import CLASS_NAMES, build_model
from keras_ultimus.report import charts, search_charts
from keras_ultimus.report.cli import main
from keras_ultimus.report.evaluate import evaluate
from keras_ultimus.report.markdown import shown_path
from keras_ultimus.report.predictions import Evaluation

LOG = {
    "epoch": [0, 1, 2, 3, 4],
    "accuracy": [0.30, 0.45, 0.55, 0.60, 0.625],
    "epoch_seconds": [10.5, 9.5, 9.75, 9.3, 9.0],
    "learning_rate": [1e-3, 3e-3, 2e-3, 1e-3, 1e-5],
    "loss": [1.9, 1.5, 1.2, 1.1, 1.05],
    "val_accuracy": [0.35, 0.5125, 0.53, 0.495, 0.50],
    "val_loss": [1.8, 1.4, 1.25, 1.45, 1.3],
}
TINY = {"num_blocks": 2, "key_dim": 4, "conv_widths": [4, 4, 4]}
CHARTS = ("curves.png", "learning_rate.png")
MODEL_CHARTS = ("per_class_accuracy.png", "confusion.png", "misclassified.png", "attention.png")


def write_run(folder, log=LOG, model=False, **config):
    """A synthetic run folder with a known CSV log (and optionally an untrained tiny model)."""
    folder.mkdir(parents=True)
    pd.DataFrame(log).to_csv(folder / "log.csv", index=False)
    info = {
        "config": {"seed": 0, "epochs": len(log["epoch"]), **TINY, **config},
        "backend": "tensorflow",
        "versions": {"keras": keras.__version__},
        "wall_seconds": 48.0,
    }
    (folder / "run.json").write_text(json.dumps(info))
    if model:
        keras.utils.set_random_seed(1)
        build_model(**TINY).save(folder / "model.keras")
    return folder


def tables(markdown: str) -> list[list[list[str]]]:
    """Every markdown table in the text, as rows of cells (header first, rule dropped)."""
    found, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r"-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table_with(markdown: str, first_header: str) -> list[list[str]]:
    return next(t for t in tables(markdown) if t[0][0] == first_header)


def number(cell: str) -> float:
    """'53.00%' -> 0.53, '1,234' -> 1234, '1.2500 (epoch 3)' -> 1.25."""
    text = cell.split(" (")[0].replace(",", "").replace("`", "")
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


@pytest.fixture
def run_with_model(tmp_path):
    return write_run(tmp_path / "runs" / "tiny", model=True, limit_test=15)


def test_single_run_report_has_csv_numbers_charts_and_model_figures(
    run_with_model, fake_cifar_tarball, tmp_path, capsys
):
    out = tmp_path / "reports" / "tiny"
    assert main([str(run_with_model), "--out", str(out), "--data", str(fake_cifar_tarball)]) == 0
    # No progress bar where stdout is no terminal (a log file).
    assert "━" not in capsys.readouterr().out
    md = (out / "report.md").read_text()

    for name in (*CHARTS, *MODEL_CHARTS):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200, name
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link
    assert (out / "log.csv").read_text() == (run_with_model / "log.csv").read_text()
    assert (out / "model.keras").read_bytes() == (
        run_with_model / "model.keras"
    ).read_bytes()  # for --evaluate

    log = pd.DataFrame(LOG)
    results = {row[0]: row for row in table_with(md, "metric")[1:]}
    metrics = (
        ("train accuracy", "accuracy", "idxmax"),
        ("train loss", "loss", "idxmin"),
        ("test accuracy", "val_accuracy", "idxmax"),
        ("test loss", "val_loss", "idxmin"),
    )
    for label, column, best in metrics:
        i = getattr(log[column], best)()
        assert number(results[label][1]) == pytest.approx(log[column].iloc[-1], abs=1e-4)
        assert number(results[label][2]) == pytest.approx(log[column][i], abs=1e-4)
        assert results[label][2].endswith(f"(epoch {i + 1})")
    assert "3.50 points (epoch 3→4)" in md

    epochs = table_with(md, "epoch")
    assert epochs[0] == [
        "epoch",
        "train loss",
        "train acc",
        "test loss",
        "test acc",
        "learning rate",
        "time (s)",
    ]
    assert [int(r[0]) for r in epochs[1:]] == [e + 1 for e in LOG["epoch"]]
    for row, (_, csv_row) in zip(epochs[1:], log.iterrows()):
        expected = [
            csv_row[c]
            for c in (
                "loss",
                "accuracy",
                "val_loss",
                "val_accuracy",
                "learning_rate",
                "epoch_seconds",
            )
        ]
        np.testing.assert_allclose([number(c) for c in row[1:]], expected, rtol=1e-2)

    model = keras.saving.load_model(run_with_model / "model.keras", compile=False)
    layers = table_with(md, "Layer (type)")
    assert [r[0] for r in layers[1:]] == [
        f"{layer.name} ({type(layer).__name__})" for layer in model.layers
    ]
    assert sum(number(r[2]) for r in layers[1:]) == model.count_params()
    assert f"Total params: {model.count_params():,}" in md
    assert (
        f"Trainable params: {sum(int(np.prod(w.shape)) for w in model.trainable_weights):,}" in md
    )

    # Per-class table against an independent NumPy count on the same 15 test images.
    _, (x_test, y_test) = load_local(fake_cifar_tarball)
    predicted = np.argmax(model.predict(x_test[:15].astype("float32"), verbose=0), axis=1)
    per_class = {row[0]: row for row in table_with(md, "class")[1:]}
    for c, name in enumerate(CLASS_NAMES):
        mask = y_test[:15] == c
        expected = [mask.sum(), (predicted[mask] == c).sum()]
        assert [int(per_class[name][1]), int(per_class[name][2])] == expected
    assert int(per_class["**all**"][2]) == (predicted == y_test[:15]).sum()
    accuracy = (predicted == y_test[:15]).mean()
    assert f"first 15 test images (limit_test): {100 * accuracy:.2f}% correct" in md
    assert "(the log's final test accuracy: 50.00%)" in md


def test_slim_report_leaves_out_the_confusion_matrix_and_gallery_and_says_how_to_draw_them(
    run_with_model, fake_cifar_tarball, tmp_path
):
    full, slim = tmp_path / "full", tmp_path / "slim"
    assert main([str(run_with_model), "--out", str(full), "--data", str(fake_cifar_tarball)]) == 0
    assert (
        main([str(run_with_model), "--out", str(slim), "--data", str(fake_cifar_tarball), "--slim"])
        == 0
    )
    left_out = {"learning_rate.png", "confusion.png", "misclassified.png"}
    assert {p.name for p in full.iterdir()} - {p.name for p in slim.iterdir()} == left_out
    md = (slim / "report.md").read_text()
    assert "report --slim" in md and "draws them from `model.keras`" in md
    assert not any(name in md for name in left_out)
    assert table_with(md, "class") == table_with((full / "report.md").read_text(), "class")


def test_several_runs_get_a_comparison_table_and_overlaid_curves(tmp_path):
    second = {**LOG, "val_accuracy": [0.3, 0.4, 0.45, 0.5, 0.55]}
    runs = [write_run(tmp_path / "a"), write_run(tmp_path / "b", log=second, seed=1)]
    out = tmp_path / "cmp"
    assert main([*map(str, runs), "--out", str(out), "--no-model"]) == 0
    md = (out / "report.md").read_text()
    rows = table_with(md, "run")
    assert [r[0] for r in rows[1:]] == ["`a`", "`b`", "mean ± std"]
    finals = [LOG["val_accuracy"][-1], second["val_accuracy"][-1]]
    assert [number(r[7]) for r in rows[1:3]] == pytest.approx(finals)
    assert rows[2][8] == "55.00% (5)" and rows[1][8] == "53.00% (3)"
    mean, std = map(float, re.findall(r"[\d.]+", rows[3][7]))
    assert (mean, std) == pytest.approx(
        (100 * np.mean(finals), 100 * np.std(finals, ddof=1)), abs=0.01
    )
    for name in (*CHARTS, "a-log.csv", "b-log.csv", "a-run.json", "b-run.json"):
        assert (out / name).is_file(), name
    assert not any((out / name).exists() for name in MODEL_CHARTS)
    assert md.count("Skipped (`--no-model`)") == 2


def test_run_without_model_skips_model_figures_and_needs_no_data(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_PATH", raising=False)
    run = write_run(tmp_path / "trial", num_blocks=3)
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Skipped (no `model.keras` in the run folder)" in md
    layers = [r[0] for r in table_with(md, "Layer (type)")[1:]]
    assert [n for n in layers if "UltimusLayer" in n] == [
        f"ultimus{i} (UltimusLayer)" for i in (1, 2, 3)
    ]
    assert not (out / "confusion.png").exists()


def test_gallery_shows_the_most_confident_mistakes(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 10
    probs = rng.dirichlet(np.ones(10), size=60)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    ev = Evaluation(images, labels, probs, [])
    shown = charts.plot_gallery(ev, "mistakes", tmp_path / "g.png")
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    top = wrong[np.argsort(-probs[wrong].max(1))][:24]
    assert len(wrong) > 24 and list(shown) == list(top)
    assert (tmp_path / "g.png").is_file()


def break_column(folder):
    log = pd.DataFrame(LOG).drop(columns="val_loss")
    log.to_csv(folder / "log.csv", index=False)


def break_value(folder):
    log = pd.DataFrame(LOG).astype({"accuracy": object})
    log.loc[2, "accuracy"] = "abc"
    log.to_csv(folder / "log.csv", index=False)


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (break_column, ["log.csv", "missing column 'val_loss'"]),
        (break_value, ["log.csv", "column 'accuracy'", "'abc'", "line 4"]),
        (lambda f: (f / "log.csv").unlink(), ["log.csv", "no such file"]),
        (lambda f: (f / "run.json").unlink(), ["run.json", "no such file"]),
        (lambda f: (f / "run.json").write_text("{oops"), ["run.json", "not valid JSON"]),
        (lambda f: (f / "log.csv").write_text(""), ["log.csv", "not a readable CSV"]),
        (
            lambda f: (f / "model.keras").write_bytes(b"not a zip"),
            ["model.keras", "cannot load model"],
        ),
        (lambda f: (f / "model.keras").mkdir(), ["model.keras", "not a .keras file"]),
        (
            lambda f: ((f / "log.csv").unlink(), (f / "log.csv").mkdir()),
            ["log.csv", "is a folder, expected a file"],
        ),
        (
            lambda f: ((f / "run.json").unlink(), (f / "run.json").mkdir()),
            ["run.json", "is a folder"],
        ),
        (lambda f: (f / "log.csv").write_bytes(b"\xff\xfe\x00garbage"), ["log.csv"]),
        (lambda f: (f / "run.json").write_text("[1, 2]"), ["run.json", "not a JSON object"]),
        (
            lambda f: (f / "run.json").write_text('{"config": {"key_dim": 0}}'),
            ["run.json", "key_dim"],
        ),
    ],
)
def test_bad_run_folder_exits_2_with_one_line_and_writes_nothing(
    tmp_path, capsys, fake_cifar_tarball, breakage, expected
):
    run = write_run(tmp_path / "run")
    breakage(run)
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out), "--data", str(fake_cifar_tarball)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    for part in expected:
        assert part in err
    assert not out.exists() and not list(tmp_path.glob(".out-*"))


def assert_one_line_error(capsys, *parts: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for part in parts:
        assert part in err, err


@pytest.mark.parametrize(
    "make_run, expected",
    [
        (lambda tmp: tmp / "nope", ["nope", "no such run folder"]),
        (
            lambda tmp: ((tmp / "a-file").write_text("x"), tmp / "a-file")[1],
            ["a-file", "is a file, expected a run folder"],
        ),
    ],
)
def test_missing_run_folder_or_a_file_given_as_one_exits_2(tmp_path, capsys, make_run, expected):
    out = tmp_path / "out"
    assert main([str(make_run(tmp_path)), "--out", str(out), "--no-model"]) == 2
    assert_one_line_error(capsys, *expected)
    assert not out.exists()


def test_a_full_disk_ends_in_one_line_exit_3_and_leaves_the_old_report(
    tmp_path, capsys, monkeypatch
):
    run, out = write_run(tmp_path / "run"), tmp_path / "out"
    assert main([str(run), "--out", str(out), "--no-model"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*args, **kwargs):
        raise OSError(
            errno.EFBIG, "File too large"
        )  # as a write past RLIMIT_FSIZE fails: no file name

    monkeypatch.setattr(charts, "save_png", full)
    capsys.readouterr()
    assert main([str(run), "--out", str(out), "--no-model"]) == 3
    assert_one_line_error(capsys, f"{out}: write failed (File too large)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no scratch folder left


def test_out_naming_a_file_exits_2_and_leaves_it_alone(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    (tmp_path / "out").write_text("keep me")
    assert main([str(run), "--out", str(tmp_path / "out"), "--no-model"]) == 2
    assert_one_line_error(capsys, "is a file, expected a report folder")
    assert (tmp_path / "out").read_text() == "keep me"


def test_junk_data_file_exits_2_in_one_line(run_with_model, tmp_path, capsys):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball at all" * 50)
    out = tmp_path / "out"
    assert main([str(run_with_model), "--out", str(out), "--data", str(junk)]) == 2
    assert_one_line_error(capsys, "junk.tar.gz", "--no-model")
    assert not out.exists() and not list(tmp_path.glob(".out-*"))


def test_missing_data_exits_2_and_suggests_no_model(run_with_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main([str(run_with_model), "--out", str(out), "--data", str(tmp_path / "nope.tar.gz")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "nope.tar.gz" in err and "--no-model" in err and "\n" not in err
    assert not out.exists()


def test_refuses_to_write_into_a_folder_that_is_not_a_report(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    assert main([str(run), "--out", str(tmp_path / "busy"), "--no-model"]) == 2
    assert "not a report folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--no-model" in capsys.readouterr().out


def test_confusion_and_class_accuracy_match_a_hand_count():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 0, 1, 1, 0])
    ev = Evaluation(np.zeros((6, 32, 32, 3), np.uint8), labels, np.eye(10)[predicted], [])
    counts = ev.confusion()
    assert counts[0, 0] == 2 and counts[0, 1] == 1 and counts[1, 1] == 2 and counts[2, 0] == 1
    assert counts.sum() == 6 and counts.shape == (10, 10)
    accuracy = ev.class_accuracy()
    np.testing.assert_allclose(accuracy[:3], [2 / 3, 1.0, 0.0])
    assert np.isnan(accuracy[3:]).all()


# ---------------------------------------------------------------- search folders (tuner/tune.py)

BOARD = {  # leaderboard order: best first; trial 2 failed (no score, no log)
    "trial_id": ["1", "0", "2"],
    "status": ["COMPLETED", "COMPLETED", "FAILED"],
    "num_blocks": [4, 2, 6],
    "key_dim": [8, 16, 4],
    "residual": [True, False, True],
    "scale": ["pre", "post", "pre"],
    "max_lr": [0.00312, 0.000845, 0.005],
    "conv_widths": ["32,256,48"] * 3,
    "trainable_params": [192778, 189562, None],
    "best_val_accuracy": [0.6125, 0.4875, None],
    "epochs_run": [3, 3, None],
    "seconds": [61.5, 40.25, None],
    "tuner_id": ["tuner0"] * 3,
}
SETTINGS = {
    "algorithm": "random",
    "epochs": 3,
    "limit_train": 600,
    "val_fraction": 0.1,
    "seed": 0,
    "batch_size": 64,
    "conv_widths": ["32,256,48"],
}
COMMAND = "python tuner/tune.py --algorithm random --max-trials 3 --epochs 3 --limit-train 600 --batch-size 64"


def write_search(folder, command=COMMAND, board=BOARD):
    """A synthetic search folder as tuner/tune.py writes it, with two trial logs."""
    folder.mkdir(parents=True)
    pd.DataFrame(board).to_csv(folder / "leaderboard.csv", index=False)
    (folder / "search.json").write_text(
        json.dumps({**SETTINGS, **({"command": command} if command else {})})
    )
    result = {
        "best_trial": "1",
        "val_accuracy": 0.6125,
        "test_accuracy": 0.5843,
        "test_images": 10000,
        "trials_completed": 2,
        "settings": {"max_trials": 3, **SETTINGS},
    }
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "best.json").write_text(
        json.dumps({"num_blocks": 4, "max_lr": 0.003, "batch_size": 64})
    )
    for trial, scale in (("0", 0.8), ("1", 1.0)):
        log = pd.DataFrame(LOG).head(3)
        log[["accuracy", "val_accuracy"]] *= scale
        (folder / f"trial_{trial}").mkdir()
        log.to_csv(folder / f"trial_{trial}" / "log.csv", index=False)
    return folder


def test_search_folder_report_has_command_settings_result_leaderboard_and_charts(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("CIFAR10_PATH", raising=False)  # a search report needs no data
    search = write_search(tmp_path / "runs" / "search")
    out = tmp_path / "reports" / "search"
    assert main([str(search), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()

    assert f"- Command: `{COMMAND}`" in md
    settings = {row[0]: row[1] for row in table_with(md, "setting")[1:]}
    assert settings == {
        "algorithm": '`"random"`',
        "epochs": "`3`",
        "max_trials": "`3`",
        "limit_train": "`600`",
        "val_fraction": "`0.1`",
        "seed": "`0`",
        "batch_size": "`64`",
        "conv_widths": '`["32,256,48"]`',
    }
    assert "Best trial **1**: validation accuracy **61.25%**" in md
    assert (
        "test accuracy, measured once at the end: **58.43%** on 10,000 official test images" in md
    )
    assert "Trials completed: 2 of 3" in md
    assert (
        f"Train it in full: `python -m keras_ultimus.train --config {shown_path(out / 'best.json')}`"
        in md
    )
    assert json.loads((out / "best.json").read_text()) == json.loads(
        (search / "best.json").read_text()
    )

    board = table_with(md, "trial_id")
    assert board[0] == list(BOARD)
    assert [r[0] for r in board[1:]] == BOARD["trial_id"]
    column = {name: [r[i] for r in board[1:]] for i, name in enumerate(board[0])}
    assert [number(c) for c in column["best_val_accuracy"][:2]] == pytest.approx(
        BOARD["best_val_accuracy"][:2]
    )
    assert column["best_val_accuracy"][2] == column["trainable_params"][2] == ""  # the failed trial
    assert [number(c) for c in column["max_lr"]] == pytest.approx(BOARD["max_lr"], rel=1e-3)
    assert column["trainable_params"][:2] == ["192,778", "189,562"] and column["residual"] == [
        "True",
        "False",
        "True",
    ]

    for name in ("search_depth.png", "search_curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200, name
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link
    assert (out / "leaderboard.csv").read_text() == (search / "leaderboard.csv").read_text()


def test_search_without_a_recorded_command_gives_its_equivalent_from_the_settings(tmp_path):
    search = write_search(tmp_path / "s", command=None)
    assert main([str(search), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert (
        f"`python tuner/tune.py --out {os.path.relpath(search)} --algorithm random --epochs 3 --limit-train 600 "
        "--val-fraction 0.1 --seed 0 --batch-size 64 --conv-widths 32,256,48 --max-trials 3`"
    ) in md
    assert "`--data` unknown" in md


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ({"drop": "num_blocks"}, ["leaderboard.csv", "missing column 'num_blocks'"]),
        (
            {"best_val_accuracy": ["0.6", "abc", ""]},
            ["leaderboard.csv", "column 'best_val_accuracy'", "'abc'", "line 3"],
        ),
        ({"result": True}, ["result.json", "missing key 'val_accuracy'"]),
    ],
)
def test_bad_search_folder_exits_2_with_one_line_and_writes_nothing(
    tmp_path, capsys, breakage, expected
):
    board = {
        k: v
        for k, v in {**BOARD, **breakage}.items()
        if k not in (breakage.get("drop"), "drop", "result")
    }
    search = write_search(tmp_path / "s", board=board)
    if "result" in breakage:
        (search / "result.json").write_text(json.dumps({"best_trial": "1"}))
    out = tmp_path / "out"
    assert main([str(search), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    for part in expected:
        assert part in err
    assert not out.exists() and not list(tmp_path.glob(".out-*"))


# ---------------------------------------------------------------- attention maps


@pytest.mark.multi_backend
def test_attention_maps_match_a_numpy_computation_from_the_block_weights():
    keras.utils.set_random_seed(3)
    model = build_model(num_blocks=2, key_dim=4, conv_widths=[4, 4, 4], scale="pre", residual=True)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    ev = evaluate(model, images, np.arange(6))
    blocks = [layer for layer in model.layers if layer.name.startswith("ultimus")]
    probe = keras.Model(model.inputs, [model.outputs[0], *(b.input for b in blocks)])
    logits, *inputs = probe.predict(images.astype("float32"), verbose=0)
    np.testing.assert_array_equal(ev.predicted, logits.argmax(1))
    assert len(ev.attention) == 2
    for block, x, got in zip(blocks, inputs, ev.attention):
        wq, bq = (keras.ops.convert_to_numpy(w) for w in block.query_dense.weights)
        wk, bk = (keras.ops.convert_to_numpy(w) for w in block.key_dense.weights)
        q, k = x @ wq + bq, x @ wk + bk
        scores = q[:, :, None] * k[:, None, :] / np.sqrt(4)
        maps = np.exp(scores - scores.max(-1, keepdims=True))
        maps /= maps.sum(-1, keepdims=True)
        np.testing.assert_allclose(got, maps.mean(axis=0), rtol=1e-4, atol=1e-6)


def test_a_model_without_ultimus_blocks_is_evaluated_and_has_no_attention_maps():
    model = build_model(num_blocks=0, conv_widths=[4, 4])
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    ev = evaluate(model, images, np.arange(5))
    logits = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_array_equal(ev.predicted, logits.argmax(1))
    assert ev.attention == [] and ev.probs.shape == (5, 10)


# ---------------------------------------------------------------- --evaluate: a saved model re-checked


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny real run of `keras_ultimus.train` on fake data: its log.csv, run.json and model.keras."""
    from keras_ultimus import train
    from tests.helpers import write_fake_tarball

    root = tmp_path_factory.mktemp("trained")
    data = write_fake_tarball(root / "cifar-10-binary.tar.gz")
    run = root / "run"
    args = [
        "--data",
        str(data),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--limit-train",
        "32",
        "--limit-test",
        "18",
        "--key-dim",
        "4",
        "--conv-widths",
        "4,4,4",
        "--residual",
    ]
    assert train.main(args) == 0
    return run, data


@pytest.mark.multi_backend
def test_evaluate_recomputes_the_logged_final_test_accuracy(trained_run, capsys):
    # Same weights, same 18 images, same batches, inference mode: the predictions are recomputed
    # exactly, so the count of correct images must equal the logged one (CSVLogger's float32
    # val_accuracy times 18 rounds back to a whole count). No tolerance needed on one backend.
    run, data = trained_run
    assert main(["--evaluate", str(run), "--data", str(data)]) == 0
    line, tta_line = capsys.readouterr().out.strip().splitlines()[-2:]
    logged = pd.read_csv(run / "log.csv")["val_accuracy"].iloc[-1]
    assert f"log.csv's final val_accuracy {100 * logged:.2f}% (epoch 1): agree" in line
    model = keras.saving.load_model(run / "model.keras", compile=False)
    _, (x_test, y_test) = load_local(data)
    correct = int(
        (model.predict(x_test[:18].astype("float32"), verbose=0).argmax(1) == y_test[:18]).sum()
    )
    assert correct == round(logged * 18)
    assert f"({correct:,} of 18 test images)" in line
    mirrored = model.predict(x_test[:18, :, ::-1].astype("float32"), verbose=0)
    plain = model.predict(x_test[:18].astype("float32"), verbose=0)
    tta_correct = int((((plain + mirrored) / 2).argmax(1) == y_test[:18]).sum())
    assert f"with flip TTA {100 * tta_correct / 18:.2f}% ({tta_correct} of 18)" in tta_line

    def flip_logits(images):
        images = images.astype("float32")
        return (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2

    def moved(offset):  # pixel (i, j) shows pixel (i + offset, j + offset), reflected at the edges
        index = np.abs(np.arange(32) + offset)
        index = np.where(index > 31, 62 - index, index)
        return x_test[:18][:, index][:, :, index]

    multicrop = flip_logits(x_test[:18]) / 2 + (flip_logits(moved(-1)) + flip_logits(moved(1))) / 4
    multicrop_correct = int((multicrop.argmax(1) == y_test[:18]).sum())
    assert (
        f"with multi-crop TTA {100 * multicrop_correct / 18:.2f}% ({multicrop_correct})" in tta_line
    )


def test_evaluate_reads_the_data_path_run_json_recorded(trained_run, capsys, monkeypatch):
    run, data = trained_run
    monkeypatch.delenv("CIFAR10_PATH", raising=False)
    assert main(["--evaluate", str(run)]) == 0
    assert ": agree" in capsys.readouterr().out


def test_evaluate_exits_1_when_the_log_disagrees_beyond_the_tolerance(
    trained_run, tmp_path, capsys
):
    run, data = trained_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.keras", "run.json"):
        (copy / name).write_bytes((run / name).read_bytes())
    log = pd.read_csv(run / "log.csv")
    off_by_one = log["val_accuracy"].iloc[-1] + (
        1 / 18 if log["val_accuracy"].iloc[-1] < 0.5 else -1 / 18
    )
    log.loc[log.index[-1], "val_accuracy"] = off_by_one
    log.to_csv(copy / "log.csv", index=False)
    assert main(["--evaluate", str(copy / "model.keras"), "--data", str(data)]) == 1
    assert "differ by" in capsys.readouterr().out
    assert main(["--evaluate", str(copy), "--data", str(data), "--tolerance", "1"]) == 0


def test_evaluate_checks_a_prefixed_model_against_its_own_log(trained_run, tmp_path, capsys):
    # A report on several runs holds NAME-model.keras beside NAME-log.csv and NAME-run.json: each model is checked
    # against its own log, not another run's (here the other run's log is one image off, and would fail).
    run, data = trained_run
    for prefix in ("good-", "other-"):
        for name in ("model.keras", "run.json", "log.csv"):
            (tmp_path / f"{prefix}{name}").write_bytes((run / name).read_bytes())
    log = pd.read_csv(run / "log.csv")
    log.loc[log.index[-1], "val_accuracy"] += (
        1 / 18 if log["val_accuracy"].iloc[-1] < 0.5 else -1 / 18
    )
    log.to_csv(tmp_path / "other-log.csv", index=False)
    assert main(["--evaluate", str(tmp_path / "good-model.keras"), "--data", str(data)]) == 0
    assert "agree" in capsys.readouterr().out
    assert main(["--evaluate", str(tmp_path / "other-model.keras"), "--data", str(data)]) == 1
    assert "other-log.csv's final val_accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "target, expected",
    [
        (lambda run: run / "missing", ["missing", "no such run folder or model file"]),
        (
            lambda run: ((run / "model.keras").unlink(), run)[1],
            ["not a .keras file or a run folder with model.keras"],
        ),
        (
            lambda run: ((run / "model.keras").write_bytes(b"junk"), run)[1],
            ["model.keras", "cannot load model"],
        ),
        (lambda run: ((run / "log.csv").unlink(), run)[1], ["log.csv", "no such file"]),
        (
            lambda run: ((run / "log.csv").write_text("epoch,loss\n0,1\n"), run)[1],
            ["log.csv", "missing column"],
        ),
    ],
)
def test_evaluate_bad_input_exits_2_in_one_line(tmp_path, capsys, target, expected):
    run = write_run(tmp_path / "run", model=True)
    assert main(["--evaluate", str(target(run))]) == 2
    assert_one_line_error(capsys, *expected)


def test_evaluate_with_bad_data_exits_2_in_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "run", model=True)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    assert main(["--evaluate", str(run), "--data", str(junk)]) == 2
    assert_one_line_error(capsys, "junk.bin")


def test_evaluate_refuses_report_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--evaluate", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--evaluate takes no RUN, --out, --no-model or --slim" in capsys.readouterr().err


# ---------------------------------------------------------------- no absolute machine paths

ABSOLUTE = re.compile(r"(?<![\w.:/~$-])/(?:home|work|root|tmp|Users|mnt|opt|var|srv|data|private)/")


def test_reports_hold_no_absolute_paths_even_from_absolute_inputs(
    tmp_path, monkeypatch, fake_cifar_tarball
):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    run = write_run(tmp_path / "runs" / "abs", data=str(fake_cifar_tarball))
    info = json.loads((run / "run.json").read_text())
    info["command"] = f"python -m keras_ultimus.train --data={fake_cifar_tarball} --out {run}"
    (run / "run.json").write_text(json.dumps(info))
    out = repo / "reports" / "abs"
    assert main([str(run), "--out", str(out), "--data", str(fake_cifar_tarball), "--no-model"]) == 0
    md = (out / "report.md").read_text()
    assert "- Folder: `../runs/abs`" in md
    assert "--data=../cifar-10-binary.tar.gz --out ../runs/abs" in md
    for file in out.iterdir():
        if file.suffix in (".md", ".json", ".csv"):
            assert str(tmp_path) not in file.read_text(), file.name
    assert (
        json.loads((out / "run.json").read_text())["config"]["data"] == "../cifar-10-binary.tar.gz"
    )


# A machine's temporary folder, reached by a relative path too (the GPU machine's ../../tmp/gr/...).
TEMPORARY = re.compile(r"(?:\.\./)+tmp/\S*")


def test_committed_reports_hold_no_absolute_machine_paths():
    reports = Path(__file__).resolve().parents[1] / "reports"
    files = [f for f in reports.rglob("*") if f.suffix in (".md", ".json", ".csv", ".txt")]
    assert files
    for file in files:
        found = ABSOLUTE.findall(file.read_text()) + TEMPORARY.findall(file.read_text())
        assert not found, f"{file.relative_to(reports)}: {found}"


@pytest.mark.slow
def test_cli_error_is_one_line_with_exit_code_2(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_ultimus.report",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    # TensorFlow's own C++ start-up lines are backend.prepare's to quiet (tested in test_backend.py).
    ours = [
        line
        for line in result.stderr.splitlines()
        if not re.match(r"[IWEF]\d{4} |WARNING: All log messages before absl", line)
    ]
    assert ours == [f"error: {tmp_path / 'nope'}: no such run folder"]
    assert not (tmp_path / "out").exists()


def test_search_report_lists_configurations_skipped_by_the_budget(tmp_path):
    skipped = {
        "trial_id": "",
        "status": "SKIPPED",
        "num_blocks": 8,
        "key_dim": 16,
        "residual": False,
        "scale": "pre",
        "max_lr": 0.001,
        "conv_widths": "256,256,256",
        "trainable_params": 1_800_000,
        "best_val_accuracy": None,
        "epochs_run": None,
        "seconds": None,
        "tuner_id": None,
    }
    board = {k: [*v, skipped[k]] for k, v in BOARD.items()}
    board["reason"] = ["", "", "", "1,800,000 trainable parameters, over the budget of 250,000"]
    search = write_search(tmp_path / "s", board=board)
    result = json.loads((search / "result.json").read_text())
    (search / "result.json").write_text(json.dumps({**result, "configurations_skipped": 1}))
    assert main([str(search), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Trials completed: 2 of 3 in the leaderboard" in md
    assert (
        "Configurations not trained (over the parameter budget, or a stem too small for its convs): 1"
        in md
    )
    rows = table_with(md, "trial_id")
    assert (
        rows[-1][:2] == ["", "SKIPPED"]
        and rows[-1][-1] == "1,800,000 trainable parameters, over the budget of 250,000"
    )


def test_a_mean_over_runs_of_different_lengths_says_so(tmp_path):
    short = {k: v[:2] for k, v in LOG.items()}
    runs = [write_run(tmp_path / "a"), write_run(tmp_path / "b", log=short, seed=1)]
    assert main([*map(str, runs), "--out", str(tmp_path / "cmp"), "--no-model"]) == 0
    rows = table_with((tmp_path / "cmp" / "report.md").read_text(), "run")
    assert rows[-1][0] == "mean ± std (of 2, 5 epochs: mixed)"


def test_depth_chart_has_a_legend_entry_only_for_what_trials_used(tmp_path, monkeypatch):
    board = pd.DataFrame(
        {
            "trial_id": ["0", "1"],
            "num_blocks": [1, 2],
            "residual": [False, False],
            "best_val_accuracy": [0.5, 0.6],
        }
    )
    labels = []
    original = search_charts.save
    monkeypatch.setattr(
        search_charts,
        "save",
        lambda fig, path: (
            labels.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts()),
            original(fig, path),
        ),
    )
    search_charts.plot_search_depth(board, "1", tmp_path / "depth.png")
    assert labels == ["residual off", "best: trial 1"]


def test_a_report_silences_tensorflow_retracing_warnings(tmp_path):
    """Scoring several models retraces predict once per model, as it must; TF's warning about it is noise here."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    assert main([str(write_run(tmp_path / "a")), "--out", str(tmp_path / "out"), "--no-model"]) == 0
    assert not logging.getLogger("tensorflow").isEnabledFor(logging.WARNING)

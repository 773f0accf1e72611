"""LR range test: smoothing and the steepest-descent pick against NumPy, sweeps on problems with a known answer."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ultimus.datasets.cifar10 import TEST_FILE, TRAIN_FILES
from keras_ultimus.errors import UserError
from keras_ultimus.lr_find import main
from keras_ultimus.training.compiling import compile_model
from keras_ultimus.training.lr_range import find_lr, smooth, suggest_lr, sweep, with_float_lr

ROOT = Path(__file__).resolve().parents[1]


def batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """The arrays in order, in batches; the same order every epoch."""
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def linear_model(optimizer: keras.optimizers.Optimizer, kernel: np.ndarray) -> keras.Model:
    """y = x @ kernel, MSE: a problem whose every step NumPy can redo."""
    model = keras.Sequential(
        [
            keras.Input((kernel.shape[0],)),
            keras.layers.Dense(
                1, use_bias=False, kernel_initializer=keras.initializers.Constant(kernel)
            ),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def regression(n: int, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = x @ rng.normal(size=(d, 1)) + 0.1 * rng.normal(size=(n, 1))
    return x, y.astype("float32")


def test_smooth_is_the_bias_corrected_ema():
    values = np.random.default_rng(1).normal(size=30) + np.linspace(3, 1, 30)
    beta = 0.8
    i, j = np.indices((30, 30))
    weights = np.where(j <= i, (1 - beta) * beta ** (i - j).clip(0), 0.0)
    expected = weights @ values / (1 - beta ** (np.arange(30) + 1))
    np.testing.assert_allclose(smooth(values, beta), expected, rtol=1e-12)
    assert smooth([5.0, 5.0, 5.0], 0.98) == pytest.approx([5.0, 5.0, 5.0])  # no bias towards 0


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = np.geomspace(1e-6, 1.0, 400)
    x = np.log(lrs)
    x0, width, x1 = np.log(3e-3), 0.7, np.log(0.1)
    loss = 2.0 - np.tanh((x - x0) / width) + np.exp(3 * (x - x1))
    # Independent: the analytic derivative's most negative point on the fall.
    slope = -1 / (width * np.cosh((x - x0) / width) ** 2) + 3 * np.exp(3 * (x - x1))
    expected = lrs[np.argmin(slope[: np.argmin(loss)])]
    assert suggest_lr(lrs, loss) == pytest.approx(expected, rel=0.04)
    assert suggest_lr(lrs, loss) == pytest.approx(3e-3, rel=0.05)
    assert lrs[np.argmin(loss)] > 5 * suggest_lr(lrs, loss)  # not the minimum

    # After the minimum, a steeper (diverged, noisy) fall that stays above it is ignored.
    wild = loss.copy()
    after = np.argmin(loss) + 20
    wild[after:] = np.linspace(40, loss.min() + 0.5, len(lrs) - after)
    assert suggest_lr(lrs, wild) == suggest_lr(lrs, loss)


def test_suggestion_refuses_a_loss_that_never_falls():
    lrs = np.geomspace(1e-4, 1, 50)
    with pytest.raises(UserError, match="never fell"):
        suggest_lr(lrs, np.linspace(1, 3, 50))


def fit_on(model, data):
    """A `sweep` fit over ready batches."""
    return lambda epochs, callbacks: model.fit(
        data, epochs=epochs, callbacks=callbacks, shuffle=False, verbose=0
    )


@pytest.mark.multi_backend
def test_sweep_sets_each_steps_lr_and_records_each_batchs_own_loss():
    # Plain SGD on MSE: NumPy redoes every step. 100 samples in batches of 32 (the last has 4), over 2 epochs.
    x, y = regression(100)
    w0 = np.random.default_rng(2).normal(size=(8, 1))
    model = linear_model(keras.optimizers.SGD(1e-3), w0)
    sizes = [32, 32, 32, 4]
    table, stopped = sweep(fit_on(model, batches(x, y, 32)), 1e-3, 0.1, 8, 4, sizes)

    lrs = np.geomspace(1e-3, 0.1, 8)
    w, expected = w0.astype(np.float64), []
    for step, lr in enumerate(lrs):
        start = 32 * (step % 4)
        xb, yb = x[start : start + 32].astype(np.float64), y[start : start + 32].astype(np.float64)
        error = xb @ w - yb
        expected.append(np.mean(error**2))
        w = w - lr * 2 * xb.T @ error / len(xb)
    assert stopped is None
    np.testing.assert_allclose(table["lr"], lrs, rtol=1e-6)
    np.testing.assert_allclose(table["loss"], expected, rtol=1e-4)
    np.testing.assert_allclose(table["smoothed"], smooth(expected), rtol=1e-4)


@pytest.mark.multi_backend
def test_sharper_loss_moves_the_suggestion_down_by_k():
    # Scaling the inputs by k makes the loss k times sharper in w (w* is k times smaller);
    # Adam's steps don't depend on the gradient's scale, so the right LR is k times smaller.
    # Full batches: no sampling noise, so the only difference is the sharpness.
    x, y = regression(256)
    suggestions = {}
    for k in (1.0, 10.0, 100.0):
        model = linear_model(keras.optimizers.Adam(1e-5), np.zeros((8, 1)))
        table, _ = sweep(fit_on(model, batches(x * k, y, 256)), 1e-5, 10.0, 64, 1)
        suggestions[k] = suggest_lr(table["lr"], table["smoothed"], skip_start=5)
    assert 10 / 1.5 < suggestions[1.0] / suggestions[10.0] < 10 * 1.5, suggestions
    assert 10 / 1.5 < suggestions[10.0] / suggestions[100.0] < 10 * 1.5, suggestions


@pytest.mark.multi_backend
def test_sweep_stops_once_the_loss_diverges():
    x, y = regression(512)
    model = linear_model(keras.optimizers.SGD(1e-4), np.zeros((8, 1)))
    table, stopped = sweep(fit_on(model, batches(x, y, 32)), 1e-4, 100.0, 64, 16, diverge=4.0)
    assert stopped and "4x its best" in stopped
    assert len(table) < 64
    assert table["smoothed"].iloc[-1] > 4 * table["smoothed"].min()
    assert (
        table["smoothed"].iloc[-2] <= 4 * table["smoothed"].iloc[:-1].min()
    )  # it stopped at the first step over


@pytest.mark.multi_backend
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_with_float_lr_keeps_the_recipes_compile_but_lets_a_callback_set_the_lr(policy):
    keras.config.set_dtype_policy(policy)
    try:
        model = linear_model(keras.optimizers.SGD(), np.zeros((8, 1)))
    finally:
        keras.config.set_dtype_policy("float32")
    compile_model(model, 0.003, 100, jit="off")
    with_float_lr(model, 2e-4)
    inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    assert isinstance(inner, keras.optimizers.Adam)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
        policy == "mixed_float16"
    )
    assert (
        isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
        and model.loss.from_logits
    )
    assert model.jit_compile is False
    model.optimizer.learning_rate = 0.05  # a schedule would refuse this
    assert float(keras.ops.convert_to_numpy(inner.learning_rate)) == pytest.approx(0.05)


@pytest.mark.multi_backend
def test_find_lr_writes_the_sweep_chart_and_suggestion(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8).repeat(1, axis=0)
    labels = (images.mean(axis=(1, 2, 3)) > 127.5).astype(np.int32)  # learnable: bright or dark
    config = {
        "seed": 0,
        "batch_size": 16,
        "augment": False,
        "num_blocks": 1,
        "conv_widths": [4, 4, 4],
    }
    result = find_lr(
        config, ((images, labels), (images[:8], labels[:8])), tmp_path / "lr", 1e-4, 10.0, 24
    )

    folder = tmp_path / "lr"
    saved = json.loads((folder / "lr_find.json").read_text())
    assert saved["suggested"] == result["suggested"]
    assert 1e-4 <= saved["suggested"] <= 10.0
    assert saved["steps"] == 24 and saved["backend"] == keras.backend.backend()
    csv = np.genfromtxt(folder / "sweep.csv", delimiter=",", names=True)
    assert list(csv.dtype.names) == ["step", "lr", "loss", "smoothed"]
    assert len(csv) == saved["steps_run"]
    assert saved["suggested"] in csv["lr"]
    assert (folder / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_input_in_one_line(tmp_path, capsys):
    cases = {
        ("--min-lr", "0.1", "--max-lr", "0.01"): "--min-lr must be below --max-lr",
        ("--min-lr", "0"): "must be positive",
        ("--max-lr", "-1"): "must be positive",
        ("--steps", "1"): "--steps must be at least 2",
        ("--smoothing", "1"): "--smoothing must be between 0 and 1",
    }
    for argv, message in cases.items():
        with pytest.raises(SystemExit) as exit:
            main(list(argv))
        assert exit.value.code == 2
        assert message in capsys.readouterr().err
    assert main(["--conv-widths", "8,0", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(
        "error: model settings: conv widths '8,0': every width must be at least 1"
    )
    assert main(["--data", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such file" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").write_text("")
    assert main(["--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err


def learnable_tarball(path: Path, per_file: int = 20) -> Path:
    """A fake cifar-10-binary.tar.gz whose label is the image's brightness band, so a sweep can lower the loss."""
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate((*TRAIN_FILES, TEST_FILE)):
            rng = np.random.default_rng(i)
            labels = rng.integers(0, 10, per_file, dtype=np.uint8)
            pixels = (labels[:, None] * 25 + rng.integers(0, 20, (per_file, 3072))).astype(np.uint8)
            raw = np.concatenate([labels[:, None], pixels], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.mark.slow
def test_cli_runs_end_to_end(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "--data",
        str(learnable_tarball(tmp_path / "cifar-10-binary.tar.gz")),
        "--out",
        str(out),
        "--batch-size",
        "16",
        "--steps",
        "20",
        "--min-lr",
        "1e-4",
        "--max-lr",
        "1",
        "--blocks",
        "1",
        "--conv-widths",
        "4,4,4",
        "--no-augment",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "keras_ultimus.lr_find", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert "suggested peak LR" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.json", "lr_find.png", "sweep.csv"]
    saved = json.loads((out / "lr_find.json").read_text())
    assert saved["command"].startswith("python -m keras_ultimus.lr_find --data")
    assert saved["config"]["conv_widths"] == [4, 4, 4]

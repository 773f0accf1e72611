"""Parity across TensorFlow, PyTorch and JAX: model files move between backends, and the math agrees.

The backend is fixed per process, so tests/backend_probe.py runs once per
backend (then once more for torch and tensorflow, to load the files saved after
their first run) and the comparisons happen here. Every backend starts from the
same NumPy-made weights.
"""

import os
import subprocess
import sys
from importlib.util import find_spec
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest

from keras_ultimus.backend import INSTALL
from tests.helpers import computed_once

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "torch", "jax")
# Each run loads what the other backends saved before it: this order covers every (saver, loader) pair.
ORDER = ("torch", "tensorflow", "jax", "torch", "tensorflow")
MODELS = ("default", "residual")
PAIRS = list(permutations(BACKENDS, 2))

LOGITS_ATOL = 1e-4  # the bar for inference-mode logits
LOSS_ATOL = 1e-5  # observed: <= 2.4e-7
# Training-step tensors (gradients, training-mode logits, BatchNorm moving statistics):
# max |a - b| <= GRAD_RTOL * max |reference| per tensor. Observed: <= 1.3e-4.
GRAD_RTOL = 1e-3


def require(*backends: str) -> None:
    """Skip unless every one of `backends` is installed."""
    for backend in backends:
        if find_spec(backend) is None:
            pytest.skip(f"backend {backend} is not installed: {INSTALL[backend]}")


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """Run the probe in ORDER over the installed backends (once per test run); each backend's merged results."""
    folder = computed_once(tmp_path_factory, "backends", run_probes)
    results = {backend: {} for backend in BACKENDS}
    for out in sorted(folder.glob("*.npz"), key=lambda p: int(p.name.split("-")[0])):
        with np.load(out) as saved:
            results[str(saved["backend"])].update(saved)
    return results


def run_probes(folder: Path) -> None:
    """Each installed backend's probe in ORDER, each loading the files the earlier ones saved in `folder`."""
    for i, backend in enumerate(ORDER):
        if find_spec(backend) is None:
            continue
        out = folder / f"{i}-{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        run = subprocess.run(
            [sys.executable, "-m", "tests.backend_probe", str(folder), str(out)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if run.returncode:
            pytest.fail(f"{backend} probe failed:\n{run.stderr[-3000:]}")
        with np.load(out) as saved:
            assert str(saved["backend"]) == backend


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("model", MODELS)
def test_same_weights_give_the_same_logits_on_every_backend(probed, model):
    require(*BACKENDS)
    reference = probed["tensorflow"][f"logits|{model}"]
    for backend in ("torch", "jax"):
        assert max_diff(probed[backend][f"logits|{model}"], reference) <= LOGITS_ATOL, backend


def test_residual_model_logits_differ_per_image(probed):
    # Otherwise agreeing within 1e-4 would say little about the per-image path.
    require("tensorflow")
    logits = probed["tensorflow"]["logits|residual"]
    assert logits.std(axis=0).max() > 100 * LOGITS_ATOL


@pytest.mark.parametrize(("saver", "loader"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("file", ["weights", "keras"], ids=[".weights.h5", ".keras"])
def test_saved_file_loads_on_another_backend_and_predicts_the_same(
    probed, file, model, saver, loader
):
    require(saver, loader)
    predicted = probed[loader][f"{file}_from|{saver}|{model}"]
    assert max_diff(predicted, probed[saver][f"logits|{model}"]) <= LOGITS_ATOL


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("model", MODELS)
def test_one_training_step_matches_tensorflow(probed, model, backend):
    require("tensorflow", backend)
    reference, other = probed["tensorflow"], probed[backend]
    assert abs(float(other[f"loss|{model}"]) - float(reference[f"loss|{model}"])) <= LOSS_ATOL
    prefixes = (f"grad|{model}|", f"moving|{model}|", f"train_logits|{model}")
    keys = sorted(k for k in reference if k.startswith(prefixes))
    assert keys == sorted(k for k in other if k.startswith(prefixes))
    assert (
        sum(k.startswith("grad|") for k in keys) == 43
    )  # all trainable variables of both models are compared
    for key in keys:
        scale = np.abs(reference[key]).max()
        assert max_diff(other[key], reference[key]) <= GRAD_RTOL * scale, key


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_loss_is_the_numpy_cross_entropy_of_its_logits(probed, backend):
    require(backend)
    labels = probed[backend]["labels"]
    for model in MODELS:
        logits = probed[backend][f"train_logits|{model}"].astype("float64")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        expected = -log_probs[np.arange(len(labels)), labels].mean()
        assert abs(float(probed[backend][f"loss|{model}"]) - expected) <= 1e-5

"""A clean install per extra: `pip install ".[torch]"` (or jax, tensorflow) into a fresh venv, then each
console script's real job, from a folder outside the checkout, on a tiny fake copy of CIFAR-10.

Opt-in: each extra downloads its backend and takes minutes. Run with
`ULTIMUS_INSTALL_TESTS=1 python -m pytest tests/test_install.py -n 3`.
"""

import json
import os
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

from keras_ultimus.datasets.fake_data import write_fake_tarball

ROOT = Path(__file__).resolve().parents[1]
BACKEND = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}

pytestmark = [
    pytest.mark.install,
    pytest.mark.skipif(
        os.environ.get("ULTIMUS_INSTALL_TESTS") != "1",
        reason="makes a venv and downloads a backend per extra; set ULTIMUS_INSTALL_TESTS=1",
    ),
]


def make_venv(folder: Path, extra: str) -> Path:
    """A fresh venv (no system site-packages) with keras-ultimus[extra] installed from this checkout; its bin/."""
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    bin_dir = folder / "bin"
    pip = [
        str(bin_dir / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    # torch: the README's CPU-only step first (requirements.txt's pin); the machine's pip settings find it.
    if extra == "torch":
        subprocess.run([*pip, pinned("torch")], check=True, cwd=folder)
    subprocess.run([*pip, f"{ROOT}[{extra}]"], check=True, cwd=folder)
    return bin_dir


def pinned(package: str) -> str:
    """requirements.txt's pin of `package` (`torch==2.13.0`), the version the README's CPU-only command installs."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.strip()
    raise LookupError(f"requirements.txt pins no {package}")


@pytest.mark.parametrize("extra", ["torch", "jax", "tensorflow"])
def test_each_console_script_does_its_job_in_a_clean_venv(extra, tmp_path):
    bin_dir = make_venv(tmp_path / "venv", extra)
    work = tmp_path / "work"
    work.mkdir()
    data = str(write_fake_tarball(work / "cifar-10-binary.tar.gz", per_file=40))
    np.save(
        work / "images.npy",
        np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8),
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "KERAS_BACKEND"))
    }
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", KERAS_BACKEND=BACKEND[extra])

    def run(script: str, *args: str, code: int | tuple[int, ...] = 0) -> str:
        done = subprocess.run(
            [str(bin_dir / script), *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode in (code if isinstance(code, tuple) else (code,)), (
            f"{script} {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
        )
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done.stdout + done.stderr

    # The package comes from the venv, not from this checkout.
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import keras_ultimus; print(keras_ultimus.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(bin_dir.parent) in where and str(ROOT) not in where

    tiny = ["--data", data, "--limit-train", "160", "--batch-size", "32"]
    assert "train" in run("ultimus-data", "--data", data)
    run("ultimus-train", *tiny, "--epochs", "1", "--limit-test", "40", "--out", "run")
    assert (work / "run" / "model.keras").exists() and (work / "run" / "log.csv").exists()
    # On random pixels and labels the loss may never fall: then the sweep is still written, with a one-line exit 2.
    message = run("ultimus-lr-find", *tiny, "--steps", "8", "--out", "lr", code=(0, 2))
    assert (work / "lr" / "sweep.csv").exists() and (
        (work / "lr" / "lr_find.json").exists() or "never fell" in message
    )
    run("ultimus-report", "run", "--out", "report", "--data", data)
    assert (work / "report" / "report.md").exists()
    assert "images.npy[2]" in run("ultimus-predict", "run/model.keras", "images.npy")
    if extra == "tensorflow":
        run("ultimus-export", "run", "--out", "export/ultimus")
        assert (work / "export" / "ultimus" / "1" / "saved_model.pb").exists()
    else:  # one line that names the extra to install, and no traceback
        message = run("ultimus-export", "run", "--out", "export/ultimus", code=2)
        assert "pip install tensorflow==" in message and len(message.strip().splitlines()) == 1
    search = ["--algorithm", "random", "--max-trials", "1", "--epochs", "1", *tiny]
    run("ultimus-tune", *search, "--out", "search")
    assert (work / "search" / "best.json").exists()
    run("ultimus-launch", "--workers", "1", *search, "--out", "search-launched")
    assert (work / "search-launched" / "best.json").exists()
    run(
        "ultimus-bench",
        "--backends",
        BACKEND[extra],
        "--precisions",
        "float32",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--batch-size",
        "16",
        "--matmul-size",
        "64",
        "--no-plain-torch",
        "--out",
        "bench",
    )
    assert (work / "bench" / "bench.csv").exists()


@pytest.mark.parametrize("extra", ["torch", "jax", "tensorflow"])
def test_the_readme_first_screen_works_in_a_clean_venv(extra, tmp_path):
    """The quick start as the README writes it, the preset commands, and (torch, jax) a run without KERAS_BACKEND.

    With $CIFAR10_PATH set to the real copy, `--quick` trains on it and must reach the README's 60%; otherwise it
    trains on a fake copy and must just finish.
    """
    bin_dir = make_venv(tmp_path / "venv", extra)
    work = tmp_path / "work"  # outside the checkout
    work.mkdir()
    real = os.environ.get("CIFAR10_PATH")
    data = (
        real
        if real and Path(real).is_file()
        else str(write_fake_tarball(work / "cifar-10-binary.tar.gz", per_file=40))
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "KERAS_BACKEND"))
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        KERAS_HOME=str(tmp_path / "keras-home"),
        CIFAR10_PATH=data,
    )
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)

    def run(
        *command: str, code: int = 0, backend: str | None = BACKEND[extra]
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            list(command),
            cwd=work,
            env={**env, **({"KERAS_BACKEND": backend} if backend else {})},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == code, f"{command}: exit {done.returncode}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done

    quick = run("python", "-m", "keras_ultimus.train", "--quick").stdout
    summary = quick.strip().splitlines()[-1]
    assert summary.startswith("After 2 of 2 epochs in "), quick[-2000:]
    print(f"{extra}: {summary}")  # shown with pytest -rP
    if data == real:
        assert float(summary.split("test accuracy ")[1].split("%")[0]) >= 65, summary

    names = run(
        "python", "-c", "import keras_ultimus; print(*keras_ultimus.list_presets())"
    ).stdout.split()
    assert names == ["ultimus_faithful_cifar10", "ultimus_whiten_resnet_cifar10"]
    samples = sorted((ROOT / "docs" / "samples").glob("*.png"))
    predicted = run(
        "ultimus-predict", "--preset", "ultimus_whiten_resnet_cifar10", *map(str, samples)
    ).stdout
    top = {
        Path(line.split(":")[0]).stem: line.split(": ")[1].split()[0]
        for line in predicted.splitlines()
    }
    assert sum(name == label for name, label in top.items()) >= 3, (
        predicted
    )  # the samples are named by their class
    if extra == "tensorflow":
        run(
            "ultimus-export", "--preset", "ultimus_whiten_resnet_cifar10", "--out", "export/ultimus"
        )
        assert (work / "export" / "ultimus" / "1" / "saved_model.pb").exists()
    else:
        refused = run("ultimus-export", "--preset", "ultimus_whiten_resnet_cifar10", code=2).stderr
        assert refused.strip().splitlines() == [
            "error: export needs TensorFlow: pip install tensorflow==2.21.0"
        ]
        # Only this backend installed and no KERAS_BACKEND: the commands use it, and say so in one line.
        done = run(
            "ultimus-train",
            "--data",
            data,
            "--limit-train",
            "64",
            "--limit-test",
            "32",
            "--epochs",
            "1",
            "--conv-widths",
            "4,8,8",
            "--out",
            "nobackend",
            backend=None,
        )
        # The commands above imported Keras, which wrote its default ('tensorflow') into KERAS_HOME's keras.json.
        keras_json = tmp_path / "keras-home" / "keras.json"
        assert done.stderr.strip().splitlines()[0] == (
            f"note: Keras backend 'tensorflow' (from {keras_json}) is not installed; using '{extra}', which is "
            "(set KERAS_BACKEND to choose)"
        )
        assert json.loads((work / "nobackend" / "run.json").read_text())["backend"] == extra

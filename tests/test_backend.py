"""The Keras backend check: a bad backend is a one-line error with exit code 2, in every CLI."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_ultimus.backend import INSTALL, configured_backend

ROOT = Path(__file__).resolve().parents[1]
# Every CLI, with arguments that parse: the check runs right after parsing, so `--help` alone would pass it.
# Outputs point into the test's tmp folder, which must stay empty: a bad backend stops a CLI before it writes.
CLIS = {
    "train": ["--out", "{tmp}/run", "--epochs", "1", "--limit-train", "8"],
    "data": ["--data", "{tmp}/cifar-10-binary.tar.gz"],
    "export": ["{tmp}/model.keras", "--out", "{tmp}/export"],
    "predict": ["{tmp}/model.keras", "{tmp}/cat.png"],
    "report": [
        "--evaluate",
        "{tmp}/run",
    ],  # a report's RUN and --out are checked before the backend
    "bench": ["--out", "{tmp}/bench"],
    "lr_find": ["--out", "{tmp}/lr"],
    "tuner.tune": ["--out", "{tmp}/search", "--epochs", "1"],
    "tuner.launch": ["--workers", "1", "--out", "{tmp}/search", "--epochs", "1"],
}


def run_cli(cli: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run `python -m keras_ultimus.<cli> ARGS` from the repo root with a clean Keras config and `env` on top."""
    base = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    base["KERAS_HOME"] = str(
        tmp_path.parent / f"{tmp_path.name}-keras-home"
    )  # never the user's ~/.keras
    args = args or [a.format(tmp=tmp_path) for a in CLIS[cli]]
    return subprocess.run(
        [sys.executable, "-m", f"keras_ultimus.{cli}", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("cli", CLIS)
def test_unknown_backend_is_a_one_line_error_in_every_cli(cli, tmp_path):
    result = run_cli(cli, tmp_path, KERAS_BACKEND="tensorfow")
    assert_one_line_error(result, "'tensorfow'", "KERAS_BACKEND", "tensorflow, torch, jax")
    assert list(tmp_path.iterdir()) == [], "nothing is written before the backend check"


def test_unknown_backend_from_keras_json_names_the_file(tmp_path):
    home = tmp_path.parent / f"{tmp_path.name}-keras-home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps({"floatx": "float32", "backend": "theano"}))
    result = run_cli("train", tmp_path)
    assert_one_line_error(result, "'theano'", str(home / "keras.json"))


@pytest.mark.parametrize("cli", CLIS)
def test_missing_backend_package_says_how_to_install_it(cli, tmp_path):
    # A `jax` package that fails to import stands in for jax not being installed.
    stub = tmp_path.parent / f"{tmp_path.name}-stub" / "jax"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'jax'\")\n")
    result = run_cli(cli, tmp_path, KERAS_BACKEND="jax", PYTHONPATH=str(stub.parent))
    assert_one_line_error(
        result,
        "'jax'",
        "not installed",
        "No module named 'jax'",
        "pip install -r requirements.txt",
        "pip install jax==0.10.2 jaxlib==0.10.2",
    )
    assert list(tmp_path.iterdir()) == [], "nothing is written before the backend check"


def test_installed_backend_passes_the_check(tmp_path):
    result = run_cli("train", tmp_path, "--help", KERAS_BACKEND="tensorflow")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_backend_comes_from_env_then_keras_json_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert configured_backend() == ("tensorflow", "Keras' default")
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert configured_backend() == ("jax", str(tmp_path / "keras.json"))
    monkeypatch.setenv("KERAS_BACKEND", "")  # Keras ignores an empty KERAS_BACKEND
    assert configured_backend() == ("jax", str(tmp_path / "keras.json"))
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert configured_backend() == ("torch", "KERAS_BACKEND")


def test_install_hints_pin_the_versions_in_requirements_txt():
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M))
    for command in INSTALL.values():
        for package, version in re.findall(r"([\w-]+)==(\S+)", command):
            assert pins.get(package) == version, f"{command!r} disagrees with requirements.txt"


def test_an_uninstalled_configured_backend_falls_back_to_an_installed_one_with_a_note(tmp_path):
    # keras.json asks for jax, and a `jax` that fails to import stands in for jax not being installed.
    home = tmp_path.parent / f"{tmp_path.name}-keras-home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps({"backend": "jax"}))
    stub = tmp_path.parent / f"{tmp_path.name}-stub" / "jax"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'jax'\")\n")
    probe = (
        "from keras_ultimus.backend import prepare; name = prepare(); import keras; "
        "print(name, keras.backend.backend())"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "KERAS_HOME": str(home), "PYTHONPATH": f"{stub.parent}{os.pathsep}{ROOT}"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "tensorflow",
        "tensorflow",
    ]  # the first installed one, in INSTALL's order
    assert result.stderr.strip().splitlines() == [
        f"note: Keras backend 'jax' (from {home / 'keras.json'}) is not installed; using 'tensorflow', which is "
        "(set KERAS_BACKEND to choose)"
    ]


def test_an_explicit_keras_backend_never_falls_back(tmp_path):
    stub = tmp_path.parent / f"{tmp_path.name}-stub" / "jax"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'jax'\")\n")
    result = run_cli("train", tmp_path, KERAS_BACKEND="jax", PYTHONPATH=str(stub.parent))
    assert_one_line_error(result, "'jax' (from KERAS_BACKEND) is not installed")


def test_install_hints_are_commands_that_work_outside_a_checkout():
    # No package named keras-ultimus is on the package index: hints name real packages, pinned.
    for path in (ROOT / "keras_ultimus").rglob("*.py"):
        assert "keras-ultimus[" not in path.read_text(), path
    assert all(
        command.startswith("pip install ") and "==" in command for command in INSTALL.values()
    )

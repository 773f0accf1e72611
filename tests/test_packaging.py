"""Packaging: the wheel installs keras_ultimus with every `ultimus-*` console script, and an editable install works.

Both build from a copy of the sources in tmp (so nothing lands in the checkout) with the installed setuptools
(no build isolation, no downloads), into a throwaway venv that sees this environment's packages.
"""

import email
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import keras_ultimus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "ultimus-train": "keras_ultimus.train:main",
    "ultimus-tune": "keras_ultimus.tuner.tune:main",
    "ultimus-launch": "keras_ultimus.tuner.launch:main",
    "ultimus-export": "keras_ultimus.export:main",
    "ultimus-predict": "keras_ultimus.predict:main",
    "ultimus-report": "keras_ultimus.report.cli:main",
    "ultimus-bench": "keras_ultimus.bench:main",
    "ultimus-lr-find": "keras_ultimus.lr_find:main",
    "ultimus-data": "keras_ultimus.data:main",
}


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    """Run a command quietly (pip offline, TensorFlow's C++ logs off); fail the test with its output."""
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.pop("PYTHONPATH", None)  # the venv must find the installed package, not this checkout
    result = subprocess.run(
        list(map(str, args)), capture_output=True, text=True, env=env, timeout=300, **kwargs
    )
    assert result.returncode == 0, (
        f"{args}: exit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    )
    return result


def copy_sources(dest: Path) -> Path:
    """The files a source distribution holds: pyproject.toml, README.md, LICENSE and the package."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "keras_ultimus", dest / "keras_ultimus", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest


def make_venv(path: Path) -> Path:
    """A venv that sees this environment's packages, so installing needs no downloads; returns its bin folder.

    A `.pth` file puts this environment's site-packages after the venv's own: when this environment is itself a
    venv, `system_site_packages` would show the base interpreter's instead. Its `.pth` files (this checkout's
    editable install among them) are not read there, so the venv sees only what it installs of keras-ultimus.
    """
    venv.create(path, with_pip=False)
    (site,) = (path / "lib").glob("python*/site-packages")
    paths = sysconfig.get_paths()
    (site / "_this_environment.pth").write_text(
        "\n".join(dict.fromkeys([paths["purelib"], paths["platlib"]])) + "\n"
    )
    return path / "bin"


def test_pyproject_declares_every_cli_and_the_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == SCRIPTS
    assert set(project["optional-dependencies"]) >= {"tensorflow", "torch", "jax", "onnx", "test"}
    assert not any(d.startswith(("tensorflow", "torch", "jax")) for d in project["dependencies"])
    assert (
        project["license"] == "Apache-2.0"
        and "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    )


def test_wheel_installs_package_and_console_scripts(tmp_path):
    source = copy_sources(tmp_path / "src")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp_path / "dist",
            source,
        ]
    )
    (wheel,) = (tmp_path / "dist").glob("keras_ultimus-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(
            archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        )
    assert metadata["Version"] == keras_ultimus.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    packaged = {n for n in names if n.endswith(".py")}
    in_checkout = {p.relative_to(ROOT).as_posix() for p in (ROOT / "keras_ultimus").rglob("*.py")}
    assert packaged == in_checkout, (
        "the wheel holds exactly the package's modules, subpackages included"
    )
    presets = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "keras_ultimus" / "presets").rglob("*")
        if p.is_file()
    }
    assert len(presets) >= 4 and presets <= set(names), (
        "the wheel carries every preset's model and metadata"
    )

    bin_dir = make_venv(tmp_path / "venv")
    run([bin_dir / "python", "-m", "pip", "install", "--no-deps", wheel])
    where = run(
        [bin_dir / "python", "-c", "import keras_ultimus; print(keras_ultimus.__file__)"],
        cwd=tmp_path,
    )
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv")
    listed = run(
        [bin_dir / "python", "-c", "import keras_ultimus; print(*keras_ultimus.list_presets())"],
        cwd=tmp_path,
    )
    assert listed.stdout.split() == sorted(
        p.name for p in (ROOT / "keras_ultimus" / "presets").iterdir()
    )
    # Every console script is installed and names a function the wheel holds (one process for all: each
    # start imports Keras); one of them runs as the user runs it. Each one's --help: the next test.
    loaded = run(
        [
            bin_dir / "python",
            "-c",
            "from importlib.metadata import entry_points\n"
            "for e in entry_points(group='console_scripts'):\n"
            "    if e.name.startswith('ultimus-'): print(e.name, e.value, callable(e.load()))",
        ],
        cwd=tmp_path,
    )
    assert sorted(loaded.stdout.splitlines()) == sorted(
        f"{name} {target} True" for name, target in SCRIPTS.items()
    )
    assert all((bin_dir / script).is_file() for script in SCRIPTS)
    result = run([bin_dir / "ultimus-train", "--help"], cwd=tmp_path)
    assert result.stdout.startswith("usage: ultimus-train "), result.stdout[:200]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_answers_help(script, capsys, monkeypatch):
    """As its console script runs it: argv[0] is the script, which argparse names in the usage line."""
    module, function = SCRIPTS[script].split(":")
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/{script}", "--help"])
    with pytest.raises(SystemExit) as done:
        getattr(importlib.import_module(module), function)(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {script} "), out[:200]


def test_editable_install_imports_the_source_tree(tmp_path):
    source = copy_sources(tmp_path / "src")
    bin_dir = make_venv(tmp_path / "venv")
    run(
        [
            bin_dir / "python",
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            source,
        ]
    )
    where = run(
        [bin_dir / "python", "-c", "import keras_ultimus; print(keras_ultimus.__file__)"],
        cwd=tmp_path,
    )
    assert Path(where.stdout.strip()) == source / "keras_ultimus" / "__init__.py"
    assert run([bin_dir / "ultimus-predict", "--help"], cwd=tmp_path).stdout.startswith(
        "usage: ultimus-predict"
    )


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python3 and the venv's python in .ci/run: `-m venv DIR` makes a venv-like folder,
# pip succeeds, and pytest exits with $FAKE_PYTEST_STATUS after recording where it was run from.
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && echo "PATH=$3/bin:\\$PATH" > "$3/bin/activate"
  echo "$3" > "$FAKE_LOG"
elif [ "$1 $2" = "-m pytest" ]; then
  echo "$TMPDIR" >> "$FAKE_LOG"
  exit "$FAKE_PYTEST_STATUS"
fi
"""


@pytest.mark.parametrize("pytest_status", [0, 1])
def test_ci_run_removes_its_venv_and_temp_files_pass_or_fail(tmp_path, pytest_status):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text(FAKE_PYTHON)
    (fake_bin / "python3").chmod(0o755)
    temp, log = tmp_path / "tmp", tmp_path / "log"
    temp.mkdir()
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "TMPDIR": str(temp),
           "FAKE_LOG": str(log), "FAKE_PYTEST_STATUS": str(pytest_status)}  # fmt: skip
    result = subprocess.run(
        ["bash", ROOT / ".ci" / "run"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == pytest_status, result.stdout + result.stderr
    venv_dir, *pytest_tmpdirs = log.read_text().split()
    assert Path(venv_dir).parent.parent == temp and pytest_tmpdirs == [
        str(Path(venv_dir).parent)
    ] * (3 if pytest_status == 0 else 1)
    assert list(temp.iterdir()) == [], "the venv and test temp files are gone"

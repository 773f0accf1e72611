"""`python -m keras_ultimus.data`: shapes, pipeline timings and one-line errors, with and without TensorFlow."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_ultimus import data
from keras_ultimus.datasets import pipelines


def run_data_cli(args: list[str], backend: str, no_tensorflow: bool) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": backend}
    if no_tensorflow:
        env["PYTHONPATH"] = os.pathsep.join([str(root / "tests" / "no_tensorflow"), str(root)])
    return subprocess.run(
        [sys.executable, "-m", "keras_ultimus.data", *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_data_cli_runs_where_tensorflow_cannot_be_imported(backend, fake_cifar_tarball):
    result = run_data_cli(
        ["--data", str(fake_cifar_tarball), "--batch-size", "16", "--epochs", "1"], backend, True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "train: (100, 32, 32, 3) uint8, per class [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]"
    )
    assert lines[2].startswith("numpy training pipeline alone") and lines[2].endswith("img/s")
    forced = run_data_cli(
        ["--data", str(fake_cifar_tarball), "--pipeline", "tfdata"], backend, True
    )
    assert forced.returncode == 2
    assert forced.stderr.strip().splitlines()[-1:] == [
        "error: the tfdata pipeline needs TensorFlow, which can't be imported here; use --pipeline numpy"
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--workers", "-1"], "--workers must be at least 0, got -1"),
        (["--pipeline", "grain"], "invalid choice: 'grain'"),
    ],
)
def test_data_cli_bad_flags_are_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        data.main(args)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_data_cli_junk_file_is_one_line(capsys, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk" * 100)
    assert data.main(["--data", str(junk), "--pipeline", "numpy"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {junk}: truncated or corrupt tarball (not a tar or compressed tar file)\n"
    )


@pytest.mark.multi_backend
def test_data_cli_prints_both_pipelines(capsys, fake_cifar_tarball):
    kinds = ["both"] if pipelines.tensorflow_importable() else ["numpy"]
    assert (
        data.main(
            [
                "--data",
                str(fake_cifar_tarball),
                "--pipeline",
                kinds[0],
                "--batch-size",
                "32",
                "--epochs",
                "1",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "test: (20, 32, 32, 3) uint8, per class [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]"
    timed = [line.split()[0] for line in out[2:]]
    assert timed == (["tfdata", "numpy"] if kinds == ["both"] else ["numpy"])

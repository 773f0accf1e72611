"""CIFAR-10 sources, the tf.data pipeline and every bad-input case."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_ultimus import cifar10, data, pipelines
from keras_ultimus.cifar10 import decode_batch, load_local
from keras_ultimus.data import make_dataset
from keras_ultimus.errors import UserError as DataError
from keras_ultimus.tfdata import augment_batch
from tests.helpers import fake_batch, write_fake_tarball


def test_decode_batch_reads_label_then_rgb_planes():
    record = np.zeros(3073, np.uint8)
    record[0] = 7
    record[1:1025] = 10          # R plane
    record[1025:2049] = 20       # G plane
    record[2049 + 32 * 2 + 5] = 99  # B plane, row 2, column 5
    images, labels = decode_batch(record.tobytes(), "x")
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [7]
    assert images[0, 0, 0].tolist() == [10, 20, 0]
    assert images[0, 2, 5].tolist() == [10, 20, 99]


@pytest.mark.parametrize("source", ["tarball", "folder", "parent"])
def test_local_sources_load_the_same_arrays(source, tmp_path, fake_cifar_tarball, fake_cifar_dir):
    path = {"tarball": fake_cifar_tarball, "folder": fake_cifar_dir, "parent": fake_cifar_dir.parent}[source]
    (x, y), (xt, yt) = load_local(path)
    assert x.shape == (100, 32, 32, 3) and xt.shape == (20, 32, 32, 3)
    assert x.dtype == np.uint8 and y.dtype == np.int32
    expected_first, _ = decode_batch(fake_batch(20, seed=0), "b1")
    np.testing.assert_array_equal(x[:20], expected_first)
    assert yt.tolist() == [i % 10 for i in range(20)]


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_local(tmp_path / "nope.tar.gz")


def test_truncated_tarball(tmp_path, fake_cifar_tarball):
    raw = fake_cifar_tarball.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz: truncated or corrupt"):
        load_local(cut)


def test_corrupt_tarball(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 10)
    with pytest.raises(DataError, match=r"bad\.tar\.gz: truncated or corrupt"):
        load_local(bad)


def test_tarball_missing_a_batch(tmp_path):
    path = tmp_path / "short.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(write_fake_tarball(tmp_path / "x.tar.gz"), arcname="unrelated")
    with pytest.raises(DataError, match="no batch file data_batch_1.bin"):
        load_local(path)


def test_folder_missing_a_batch(fake_cifar_dir):
    (fake_cifar_dir / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match="missing batch file data_batch_3.bin"):
        load_local(fake_cifar_dir)


def test_batch_file_of_wrong_size(fake_cifar_dir):
    (fake_cifar_dir / "test_batch.bin").write_bytes(fake_batch(3, seed=0)[:-5])
    with pytest.raises(DataError, match=r"test_batch\.bin: 9214 bytes is not a whole number"):
        load_local(fake_cifar_dir)


def test_label_out_of_range(fake_cifar_dir):
    raw = bytearray(fake_batch(2, seed=0))
    raw[3073] = 12
    (fake_cifar_dir / "data_batch_1.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="label 12 of record 1"):
        load_local(fake_cifar_dir)


def test_env_variable_selects_local_copy(monkeypatch, fake_cifar_tarball):
    monkeypatch.setenv("CIFAR10_PATH", str(fake_cifar_tarball))
    (x, _), _ = data.load_cifar10()
    assert len(x) == 100


def test_tfds_source_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        (x, y), (xt, yt) = cifar10.load_tfds()
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8
    assert xt.shape == (12, 32, 32, 3) and y.dtype == np.int32 and yt.max() <= 9


def test_tfds_offline_says_to_pass_data(monkeypatch, tmp_path):
    monkeypatch.setattr(cifar10, "TFDS_HOST", ("127.0.0.1", 9))  # nothing listens there
    with pytest.raises(DataError, match="pass --data PATH"):
        cifar10.load_tfds(data_dir=str(tmp_path))


def test_split_validation_is_disjoint_and_seeded():
    images = np.arange(100).reshape(100, 1)
    labels = np.arange(100)
    (tx, ty), (vx, vy) = cifar10.split_validation(images, labels, 0.2, seed=3)
    assert len(vx) == 20 and len(tx) == 80
    assert sorted(np.concatenate([ty, vy]).tolist()) == list(range(100))
    np.testing.assert_array_equal(vx[:, 0], vy)
    (_, _), (vx2, _) = cifar10.split_validation(images, labels, 0.2, seed=3)
    np.testing.assert_array_equal(vx, vx2)


def test_augment_batch_is_a_padded_crop_or_its_mirror():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    out = augment_batch(tf.constant(images), tf.constant([1, 2], tf.int64)).numpy()
    found_shift = found_flip = False
    for image, result in zip(images, out):
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)
                   if np.array_equal(padded[dy:dy + 32, dx:dx + 32][:, ::-1] if flip
                                     else padded[dy:dy + 32, dx:dx + 32], result)]
        assert matches, "output is not a crop of the padded image"
        found_shift |= any((dy, dx) != (4, 4) for dy, dx, _ in matches)
        found_flip |= all(flip for _, _, flip in matches)
    assert found_shift and found_flip


def test_make_dataset_training_epoch_is_a_seeded_permutation():
    images = np.repeat(np.arange(50, dtype=np.uint8), 32 * 32 * 3).reshape(50, 32, 32, 3)
    labels = np.arange(50)
    ds = make_dataset(images, labels, batch_size=16, training=True, augment=False, seed=1)
    batches = list(ds)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x0, _ = batches[0]
    assert x0.dtype == tf.float32
    seen = np.concatenate([y.numpy() for _, y in batches])
    assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))
    second = np.concatenate([y.numpy() for _, y in ds])
    assert second.tolist() != seen.tolist()  # reshuffled each epoch
    test = np.concatenate([y.numpy() for _, y in make_dataset(images, labels, 16)])
    assert test.tolist() == list(range(50))


@pytest.mark.real_data
def test_real_cifar10_copy_loads_whole(real_cifar):
    (x, y), (xt, yt) = load_local(real_cifar)
    assert x.shape == (50_000, 32, 32, 3) and xt.shape == (10_000, 32, 32, 3)
    assert x.dtype == xt.dtype == np.uint8 and y.dtype == yt.dtype == np.int32
    assert np.bincount(y).tolist() == [5000] * 10
    assert np.bincount(yt).tolist() == [1000] * 10
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert x[0, 0, :3, 0].tolist() == [59, 43, 50]
    np.testing.assert_allclose(x.reshape(-1, 3).mean(0), [125.307, 122.950, 113.865], atol=1e-2)


def run_data_cli(args: list[str], backend: str, no_tensorflow: bool) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": backend}
    if no_tensorflow:
        env["PYTHONPATH"] = os.pathsep.join([str(root / "tests" / "no_tensorflow"), str(root)])
    return subprocess.run([sys.executable, "-m", "keras_ultimus.data", *args], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_data_cli_runs_where_tensorflow_cannot_be_imported(backend, fake_cifar_tarball):
    result = run_data_cli(["--data", str(fake_cifar_tarball), "--batch-size", "16", "--epochs", "1"], backend, True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "train: (100, 32, 32, 3) uint8, per class [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]"
    assert lines[2].startswith("numpy training pipeline alone") and lines[2].endswith("img/s")
    forced = run_data_cli(["--data", str(fake_cifar_tarball), "--pipeline", "tfdata"], backend, True)
    assert forced.returncode == 2
    assert forced.stderr.strip().splitlines()[-1:] == [
        "error: the tfdata pipeline needs TensorFlow, which can't be imported here; use --pipeline numpy"]


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--workers", "-1"], "--workers must be at least 0, got -1"),
    (["--pipeline", "grain"], "invalid choice: 'grain'"),
])
def test_data_cli_bad_flags_are_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        data.main(args)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_data_cli_junk_file_is_one_line(capsys, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk" * 100)
    assert data.main(["--data", str(junk), "--pipeline", "numpy"]) == 2
    assert capsys.readouterr().err == f"error: {junk}: truncated or corrupt tarball (not a tar or compressed tar file)\n"


@pytest.mark.multi_backend
def test_data_cli_prints_both_pipelines(capsys, fake_cifar_tarball):
    kinds = ["both"] if pipelines.tensorflow_importable() else ["numpy"]
    assert data.main(["--data", str(fake_cifar_tarball), "--pipeline", kinds[0], "--batch-size", "32",
                      "--epochs", "1", "--workers", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "test: (20, 32, 32, 3) uint8, per class [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]"
    timed = [line.split()[0] for line in out[2:]]
    assert timed == (["tfdata", "numpy"] if kinds == ["both"] else ["numpy"])

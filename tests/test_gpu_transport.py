"""tools/transport/: the data parts reassembled (a carved split called held-out), wheels, carried results, packing."""

import base64
import hashlib
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from keras_ultimus.datasets.fake_data import write_fake_tarball
from tools.transport import packing, parts, wheels


def fake_parts(tmp_path: Path, keep: int) -> Path:
    """A cache whose parts/ holds the first `keep` of 3 parts of a fake tarball (20 images a file)."""
    cache = tmp_path / "cache"
    tarball = write_fake_tarball(tmp_path / "fake.tar.gz")
    parts.split_into_parts(tarball, cache / "parts", count=3, keep=keep)
    return cache


def test_without_test_batch_the_last_sixth_of_the_training_images_is_a_held_out_split(tmp_path):
    cache = fake_parts(tmp_path, keep=2)
    assert sorted(p.name for p in (cache / "parts").iterdir()) == ["cifar.part-aa", "cifar.part-ab"]
    data = parts.assemble_data(cache, tmp_path / "data.txt", check_md5=False)
    assert data.held_out and data.split == "held-out"
    joined = b"".join(p.read_bytes() for p in sorted((cache / "parts").iterdir()))
    members = parts.read_members(joined)
    assert "test_batch.bin" not in members
    read = b"".join(body for name, body in sorted(members.items()))
    carved = (data.path / "test_batch.bin").read_bytes()
    scored = len(carved) // parts.RECORD
    assert scored == len(read) // parts.RECORD // 6 > 0 and read.endswith(carved)
    assert sorted(p.name for p in data.path.iterdir())[:5] == [
        f"data_batch_{i}.bin" for i in range(1, 6)
    ]
    note = (tmp_path / "data.txt").read_text()
    assert "PARTIAL data" in note and f"{scored} HELD-OUT images" in note
    assert "test images" not in note


def test_with_test_batch_the_partial_data_is_scored_on_the_test_split(tmp_path):
    cache = fake_parts(tmp_path, keep=3)  # every file, but not the project's tarball (md5)
    data = parts.assemble_data(cache, tmp_path / "data.txt", check_md5=False)
    assert not data.held_out and data.split == "test"
    assert (data.path / "test_batch.bin").stat().st_size == 20 * parts.RECORD
    assert "20 test images (test_batch.bin)" in (tmp_path / "data.txt").read_text()


def test_batch_files_with_a_wrong_md5_are_refused_so_no_training_file_is_left(tmp_path):
    cache = fake_parts(tmp_path, keep=3)
    with pytest.raises(ValueError, match="no complete training batch file"):
        parts.assemble_data(cache, tmp_path / "data.txt")


def test_gathering_copies_only_the_parts_not_there_yet(tmp_path):
    source, cache = tmp_path / "src", tmp_path / "parts"
    source.mkdir()
    cache.mkdir()
    (source / "cifar.part-aa").write_bytes(b"new")
    (source / "cifar.part-ab").write_bytes(b"new")
    (cache / "cifar.part-aa").write_bytes(b"old")
    names = parts.gather_parts(sorted(source.iterdir()), cache)
    assert names == ["cifar.part-aa", "cifar.part-ab"]
    assert (cache / "cifar.part-aa").read_bytes() == b"old"


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel of a package `ultimus_probe_pkg`, made by hand (no network, no build tool)."""
    files = {
        "ultimus_probe_pkg/__init__.py": b"VALUE = 7\n",
        "ultimus_probe_pkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ultimus-probe-pkg\n"
        b"Version: 0.1\n",
        "ultimus_probe_pkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b'=').decode()},"
        f"{len(body)}"
        for name, body in files.items()
    ]
    files["ultimus_probe_pkg-0.1.dist-info/RECORD"] = (
        "\n".join([*record, "ultimus_probe_pkg-0.1.dist-info/RECORD,,"]) + "\n"
    ).encode()
    path = folder / "ultimus_probe_pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name, body in files.items():
            whl.writestr(name, body)
    return path


def test_wheels_go_into_the_site_folder_once_and_only_when_a_module_is_missing(
    tmp_path, monkeypatch
):
    wheel, site, said = tiny_wheel(tmp_path), tmp_path / "site", []
    assert not wheels.install_wheels([wheel], site, modules=("json",), log=said.append)
    assert not site.exists() and not said  # json imports: nothing to install
    assert wheels.install_wheels([wheel], site, modules=("ultimus_probe_pkg",), log=said.append)
    assert (site / "ultimus_probe_pkg" / "__init__.py").is_file() and len(said) == 1
    assert wheels.install_wheels([wheel], site, modules=("ultimus_probe_pkg",), log=said.append)
    assert len(said) == 1  # installed on an earlier call: not again
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    wheels.use_site(site)
    wheels.use_site(site)
    assert sys.path.count(str(site)) == 1 and sys.path[0] == str(site)
    assert wheels.os.environ["PYTHONPATH"] == f"{site}:/elsewhere"


def test_carried_results_fill_the_work_folder_without_replacing_what_is_there(tmp_path):
    carry, work = tmp_path / "carry", tmp_path / "work"
    (carry / "search").mkdir(parents=True)
    (carry / "search" / "best.json").write_text("carried")
    (carry / "seed-1").mkdir()
    (carry / "seed-1" / "run.json").write_text("carried")
    (work / "seed-1").mkdir(parents=True)
    (work / "seed-1" / "run.json").write_text("here")
    assert wheels.merge_carry(carry, work) == [work / "search" / "best.json"]
    assert (work / "seed-1" / "run.json").read_text() == "here"
    assert wheels.merge_carry(tmp_path / "none", work) == []


def test_packing_keeps_a_long_logs_tail_ranks_models_and_skips_backups(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    for folder in ("logs", "summary", "a", "b", "a/backup"):
        (work / folder).mkdir(parents=True)
    out.mkdir()
    (work / "logs" / "a.log").write_bytes(b"x" * packing.LOG_TAIL + b"THE END")
    (work / "summary" / "train.txt").write_text("torch: fine\n")
    (work / "a" / "model.keras").write_bytes(b"a" * 10)
    (work / "b" / "model.keras").write_bytes(b"b" * 10)
    (work / "a" / "backup" / "w.keras").write_bytes(b"no")
    packing.pack(work, out, rank=lambda p: p.parent.name != "b")
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
        log = tar.extractfile("logs/a.log").read()
    assert [n for n in names if n.endswith(".keras")] == ["b/model.keras", "a/model.keras"]
    assert not any("backup" in n for n in names) and "packed.txt" in names
    assert log.endswith(b"THE END") and len(log) < packing.LOG_TAIL + 100
    assert (out / "summary.txt").read_text().startswith("== train\ntorch: fine\n== packed\n")

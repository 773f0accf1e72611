"""The CIFAR-10 reader: each source and each bad input by example, then fuzzing (right arrays or one UserError line).

The expected arrays come from an independent NumPy decoding of the records the
test wrote. Budget: the `ci` Hypothesis profile from conftest; run
`HYPOTHESIS_PROFILE=long python -m pytest tests/test_cifar10.py` for many more examples.
"""

import io
import tarfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_ultimus.datasets import cifar10
from keras_ultimus.datasets.cifar10 import (
    RECORD_BYTES,
    TEST_FILE,
    TRAIN_FILES,
    decode_batch,
    load_local,
)
from keras_ultimus.errors import UserError
from tests.helpers import fake_batch, write_fake_tarball

pytestmark = pytest.mark.multi_backend
NAMES = (*TRAIN_FILES, TEST_FILE)
PER_FILE = 3


def records(n: int, seed: int, labels_max: int = 9) -> bytes:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, RECORD_BYTES), dtype=np.uint8)
    raw[:, 0] = rng.integers(0, labels_max + 1, n)
    return raw.tobytes()


def reference_decode(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode record by record, pixel by pixel: the independent NumPy reference."""
    out, labels = [], []
    for start in range(0, len(raw), RECORD_BYTES):
        record = np.frombuffer(raw[start : start + RECORD_BYTES], np.uint8)
        labels.append(int(record[0]))
        planes = record[1:].reshape(3, 32, 32)
        out.append(np.stack([planes[c] for c in range(3)], axis=-1))
    return np.array(out, np.uint8), np.array(labels, np.int32)


def official_members(seed: int = 0) -> dict[str, bytes]:
    return {name: records(PER_FILE, seed + i) for i, name in enumerate(NAMES)}


def tarball(members: list[tuple[str, bytes]], compression: str = "gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


def expected(members: dict[str, bytes]):
    train = [reference_decode(members[n]) for n in TRAIN_FILES]
    return (
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
    ), reference_decode(members[TEST_FILE])


def load_or_error(path):
    """load_local's result, or the UserError it raised; any other exception fails the test."""
    try:
        return load_local(path)
    except UserError as e:
        assert "\n" not in str(e) and str(e).strip(), repr(str(e))
        return e


def assert_loaded(result, members):
    assert not isinstance(result, UserError), result
    (x, y), (xt, yt) = result
    (ex, ey), (ext, eyt) = expected(members)
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(xt, ext)
    np.testing.assert_array_equal(yt, eyt)


def test_decode_batch_reads_label_then_rgb_planes():
    record = np.zeros(3073, np.uint8)
    record[0] = 7
    record[1:1025] = 10  # R plane
    record[1025:2049] = 20  # G plane
    record[2049 + 32 * 2 + 5] = 99  # B plane, row 2, column 5
    images, labels = decode_batch(record.tobytes(), "x")
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [7]
    assert images[0, 0, 0].tolist() == [10, 20, 0]
    assert images[0, 2, 5].tolist() == [10, 20, 99]


@pytest.mark.parametrize("source", ["tarball", "folder", "parent"])
def test_local_sources_load_the_same_arrays(source, tmp_path, fake_cifar_tarball, fake_cifar_dir):
    path = {
        "tarball": fake_cifar_tarball,
        "folder": fake_cifar_dir,
        "parent": fake_cifar_dir.parent,
    }[source]
    (x, y), (xt, yt) = load_local(path)
    assert x.shape == (100, 32, 32, 3) and xt.shape == (20, 32, 32, 3)
    assert x.dtype == np.uint8 and y.dtype == np.int32
    expected_first, _ = decode_batch(fake_batch(20, seed=0), "b1")
    np.testing.assert_array_equal(x[:20], expected_first)
    assert yt.tolist() == [i % 10 for i in range(20)]


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_local(tmp_path / "nope.tar.gz")


def test_empty_file_is_named_as_such_before_any_read(tmp_path):
    empty = tmp_path / "cifar-10-binary.tar.gz"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"cifar-10-binary\.tar\.gz: empty file \(0 bytes\)"):
        load_local(empty)


def test_tfds_miss_prints_no_absl_dataset_info_warning(monkeypatch, caplog):
    tfds = pytest.importorskip("tensorflow_datasets")
    import logging

    def load(*args, **kwargs):
        logging.getLogger("absl").warning(
            "Variant folder /x/cifar10/3.0.2 has no dataset_info.json"
        )
        raise tfds.core.registered.DatasetNotFoundError("cifar10")

    monkeypatch.setattr(tfds, "load", load)
    monkeypatch.setattr(cifar10, "_reachable", lambda host: False)
    with (
        caplog.at_level(logging.WARNING, logger="absl"),
        pytest.raises(UserError, match="can't be reached"),
    ):
        cifar10.load_tfds()
    assert "dataset_info" not in caplog.text


def test_truncated_tarball(tmp_path, fake_cifar_tarball):
    raw = fake_cifar_tarball.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match=r"cut\.tar\.gz: truncated or corrupt"):
        load_local(cut)


def test_corrupt_tarball(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 10)
    with pytest.raises(UserError, match=r"bad\.tar\.gz: truncated or corrupt"):
        load_local(bad)


def test_tarball_missing_a_batch(tmp_path):
    path = tmp_path / "short.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(write_fake_tarball(tmp_path / "x.tar.gz"), arcname="unrelated")
    with pytest.raises(UserError, match="no batch file data_batch_1.bin"):
        load_local(path)


def test_folder_missing_a_batch(fake_cifar_dir):
    (fake_cifar_dir / "data_batch_3.bin").unlink()
    with pytest.raises(UserError, match="missing batch file data_batch_3.bin"):
        load_local(fake_cifar_dir)


def test_batch_file_of_wrong_size(fake_cifar_dir):
    (fake_cifar_dir / "test_batch.bin").write_bytes(fake_batch(3, seed=0)[:-5])
    with pytest.raises(UserError, match=r"test_batch\.bin: 9214 bytes is not a whole number"):
        load_local(fake_cifar_dir)


def test_label_out_of_range(fake_cifar_dir):
    raw = bytearray(fake_batch(2, seed=0))
    raw[3073] = 12
    (fake_cifar_dir / "data_batch_1.bin").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="label 12 of record 1"):
        load_local(fake_cifar_dir)


def test_env_variable_selects_local_copy(monkeypatch, fake_cifar_tarball):
    monkeypatch.setenv("CIFAR10_PATH", str(fake_cifar_tarball))
    (x, _), _ = cifar10.load_cifar10()
    assert len(x) == 100


def test_tfds_source_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        (x, y), (xt, yt) = cifar10.load_tfds()
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8
    assert xt.shape == (12, 32, 32, 3) and y.dtype == np.int32 and yt.max() <= 9


def test_tfds_offline_says_to_pass_data(monkeypatch, tmp_path):
    monkeypatch.setattr(cifar10, "TFDS_HOST", ("127.0.0.1", 9))  # nothing listens there
    with pytest.raises(UserError, match="pass --data PATH"):
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


@given(st.binary(max_size=3 * RECORD_BYTES))
def test_decode_batch_of_random_bytes_is_the_records_or_one_error(raw):
    try:
        images, labels = decode_batch(raw, "b.bin")
    except UserError as e:
        assert "\n" not in str(e)
        assert len(raw) % RECORD_BYTES or not raw or max(raw[::RECORD_BYTES]) > 9
        return
    ref_images, ref_labels = reference_decode(raw)
    np.testing.assert_array_equal(images, ref_images)
    np.testing.assert_array_equal(labels, ref_labels)


@given(st.binary(max_size=4096))
def test_random_bytes_as_data_give_one_error_line(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("junk") / "junk.bin"
    path.write_bytes(raw)
    assert isinstance(load_or_error(path), UserError)


@given(st.sampled_from(NAMES), st.integers(0, PER_FILE * RECORD_BYTES - 1))
def test_batch_file_cut_anywhere_is_refused(tmp_path_factory, name, keep):
    """Cut inside a record or at a record boundary (fewer records than its siblings): one error line."""
    members = official_members()
    members[name] = members[name][:keep]
    folder = tmp_path_factory.mktemp("cut") / "cifar-10-batches-bin"
    folder.mkdir()
    for member, raw in members.items():
        (folder / member).write_bytes(raw)
    result = load_or_error(folder)
    if (
        name == TEST_FILE and keep and keep % RECORD_BYTES == 0
    ):  # a shorter test split is still a valid copy
        assert_loaded(result, members)
    else:
        assert isinstance(result, UserError)


@given(st.sampled_from(NAMES), st.integers(0, PER_FILE - 1), st.integers(10, 255))
def test_label_out_of_range_is_refused_naming_file_and_record(
    tmp_path_factory, name, record, label
):
    members = official_members()
    raw = bytearray(members[name])
    raw[record * RECORD_BYTES] = label
    members[name] = bytes(raw)
    path = tmp_path_factory.mktemp("label") / "c.tar.gz"
    path.write_bytes(tarball(list(members.items())))
    result = load_or_error(path)
    assert isinstance(result, UserError)
    assert f"{name}: label {label} of record {record}" in str(result)


@given(st.sampled_from(["", "gz", "bz2", "xz"]), st.data())
def test_tarball_truncated_anywhere_is_whole_or_one_error(tmp_path_factory, compression, data):
    members = official_members()
    whole = tarball([(f"cifar-10-batches-bin/{n}", raw) for n, raw in members.items()], compression)
    keep = data.draw(st.integers(0, len(whole) - 1))
    path = tmp_path_factory.mktemp("trunc") / "c.tar"
    path.write_bytes(whole[:keep])
    result = load_or_error(path)
    if not isinstance(result, UserError):  # only the end-of-archive padding was cut
        assert_loaded(result, members)


@given(st.data())
def test_corrupted_gzip_tarball_is_exact_or_one_error(tmp_path_factory, data):
    members = official_members()
    raw = bytearray(tarball([(f"cifar-10-batches-bin/{n}", r) for n, r in members.items()]))
    position = data.draw(st.integers(10, len(raw) - 1))  # past the gzip header's timestamp/flags
    raw[position] ^= data.draw(st.integers(1, 255))
    path = tmp_path_factory.mktemp("flip") / "c.tar.gz"
    path.write_bytes(bytes(raw))
    result = load_or_error(path)
    if not isinstance(
        result, UserError
    ):  # the gzip CRC is checked, so a silent change is impossible
        assert_loaded(result, members)


@given(
    extra=st.lists(
        st.tuples(
            st.sampled_from(["README", "x/data_batch_9.bin", "batches.meta.txt", "data_batch_1"]),
            st.binary(max_size=64),
        ),
        max_size=3,
    ),
    missing=st.sets(st.sampled_from(NAMES), max_size=2),
    duplicated=st.sets(st.sampled_from(NAMES), max_size=2),
    order=st.randoms(use_true_random=False),
)
def test_tarball_with_extra_missing_or_duplicated_members(
    tmp_path_factory, extra, missing, duplicated, order
):
    members = official_members()
    entries = [(f"cifar-10-batches-bin/{n}", raw) for n, raw in members.items() if n not in missing]
    entries += [(f"copy/{n}", members[n]) for n in duplicated if n not in missing]
    entries += extra
    order.shuffle(entries)
    path = tmp_path_factory.mktemp("members") / "c.tar.gz"
    path.write_bytes(tarball(entries))
    result = load_or_error(path)
    reasons = ["no batch file"] * bool(missing) + ["more than once"] * bool(duplicated - missing)
    if reasons:
        assert isinstance(result, UserError) and any(reason in str(result) for reason in reasons), (
            result
        )
    else:
        assert_loaded(result, members)


def test_junk_file_as_data_gives_one_line(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_text("not a tarball\n" * 50)
    with pytest.raises(UserError) as e:
        load_local(junk)
    assert (
        str(e.value) == f"{junk}: truncated or corrupt tarball (not a tar or compressed tar file)"
    )


def test_training_batch_cut_at_a_record_boundary_names_the_short_file(tmp_path):
    members = official_members()
    members["data_batch_4.bin"] = members["data_batch_4.bin"][:RECORD_BYTES]
    path = tmp_path / "c.tar.gz"
    path.write_bytes(tarball(list(members.items())))
    with pytest.raises(
        UserError, match=r"data_batch_4\.bin: 1 records, but another training batch file has 3"
    ):
        load_local(path)


def test_unreadable_folder_member_is_one_line(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name, raw in official_members().items():
        (folder / name).write_bytes(raw)
    (folder / TEST_FILE).unlink()
    (folder / TEST_FILE).mkdir()  # a folder where a batch file should be
    with pytest.raises(UserError, match="missing batch file test_batch.bin"):
        load_local(folder)

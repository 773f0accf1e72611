"""Fuzzing the CIFAR-10 binary reader: every input gives the right arrays or one UserError line, nothing else.

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

from keras_ultimus.cifar10 import RECORD_BYTES, TEST_FILE, TRAIN_FILES, decode_batch, load_local
from keras_ultimus.errors import UserError

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
        record = np.frombuffer(raw[start:start + RECORD_BYTES], np.uint8)
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
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])), reference_decode(
        members[TEST_FILE])


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
    if name == TEST_FILE and keep and keep % RECORD_BYTES == 0:  # a shorter test split is still a valid copy
        assert_loaded(result, members)
    else:
        assert isinstance(result, UserError)


@given(st.sampled_from(NAMES), st.integers(0, PER_FILE - 1), st.integers(10, 255))
def test_label_out_of_range_is_refused_naming_file_and_record(tmp_path_factory, name, record, label):
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
    if not isinstance(result, UserError):  # the gzip CRC is checked, so a silent change is impossible
        assert_loaded(result, members)


@given(
    extra=st.lists(st.tuples(st.sampled_from(["README", "x/data_batch_9.bin", "batches.meta.txt", "data_batch_1"]),
                             st.binary(max_size=64)), max_size=3),
    missing=st.sets(st.sampled_from(NAMES), max_size=2),
    duplicated=st.sets(st.sampled_from(NAMES), max_size=2),
    order=st.randoms(use_true_random=False),
)
def test_tarball_with_extra_missing_or_duplicated_members(tmp_path_factory, extra, missing, duplicated, order):
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
        assert isinstance(result, UserError) and any(reason in str(result) for reason in reasons), result
    else:
        assert_loaded(result, members)


def test_junk_file_as_data_gives_one_line(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_text("not a tarball\n" * 50)
    with pytest.raises(UserError) as e:
        load_local(junk)
    assert str(e.value) == f"{junk}: truncated or corrupt tarball (not a tar or compressed tar file)"


def test_training_batch_cut_at_a_record_boundary_names_the_short_file(tmp_path):
    members = official_members()
    members["data_batch_4.bin"] = members["data_batch_4.bin"][:RECORD_BYTES]
    path = tmp_path / "c.tar.gz"
    path.write_bytes(tarball(list(members.items())))
    with pytest.raises(UserError, match=r"data_batch_4\.bin: 1 records, but another training batch file has 3"):
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

"""The CIFAR-10 tarball carried in parts: gather them, reassemble and md5-check it, or use what came so far."""

import hashlib
import io
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

TARBALL_MD5 = "8a7d4dca7a6b931d53ebf9c593972fdc"  # the project's tarball (see the data's SOURCE.md)
OFFICIAL_MD5 = {  # official per-file md5s of the binary release
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25", "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421", "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d", "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}  # fmt: skip
SUFFIXES = [
    a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"
]  # split's
RECORD = 3073  # one image: a label byte and 3,072 pixel bytes
WHOLE = "cifar-10-binary.tar.gz"


@dataclass(frozen=True)
class Data:
    """What the runs train on: a `--data` path, and whether their scoring split is carved from training files."""

    path: Path
    held_out: bool = False

    @property
    def split(self) -> str:
        """What the runs' per-epoch score is on: "test", or "held-out" when carved from training files."""
        return "held-out" if self.held_out else "test"


def gather_parts(sources: list[Path], parts: Path) -> list[str]:
    """Copy the parts of `sources` that `parts` lacks; return the names of all there, sorted."""
    parts.mkdir(parents=True, exist_ok=True)
    for part in sources:
        if not (parts / part.name).exists():
            shutil.copy(part, parts / part.name)
    return sorted(p.name for p in parts.iterdir())


def split_into_parts(tarball: Path, parts: Path, count: int, keep: int) -> None:
    """Cut `tarball` into `count` parts named as `split` names them; write the first `keep` into `parts`."""
    data = tarball.read_bytes()
    size = -(-len(data) // count)
    parts.mkdir(parents=True, exist_ok=True)
    for i, suffix in enumerate(SUFFIXES[:keep]):
        (parts / f"cifar.part-{suffix}").write_bytes(data[i * size : (i + 1) * size])


def read_members(joined: bytes) -> dict[str, bytes]:
    """The files read whole from the start of a gzipped tarball, by base name (the rest when it ends early)."""
    raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(joined)
    members = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
            for member in tar:
                body = (tar.extractfile(member) or io.BytesIO()).read()
                if member.isfile() and len(body) == member.size:
                    members[Path(member.name).name] = body
    except (tarfile.ReadError, EOFError, OSError, zlib.error):
        pass  # the tarball ends early: keep the members read whole
    return members


def assemble_data(cache: Path, note: Path, check_md5: bool = True) -> Data:
    """The checked tarball if every part is in `cache`/parts; else the batch files read whole so far, as a copy.

    Without test_batch.bin the last sixth of the training images stands in for it: `Data.held_out`. `note`
    says which. `check_md5=False` (fake data) uses batch files whose md5 is not the official one.
    """
    whole = cache / WHOLE
    if whole.is_file() and hashlib.md5(whole.read_bytes()).hexdigest() == TARBALL_MD5:
        return Data(whole)  # checked on an earlier call
    parts = sorted((cache / "parts").glob("cifar.part-*"))
    names = [p.name[-2:] for p in parts]
    joined = b"".join(
        p.read_bytes() for p, n, e in zip(parts, names, SUFFIXES) if n == e
    )  # to a gap
    members = read_members(joined)
    checked = {
        n: hashlib.md5(b).hexdigest() == OFFICIAL_MD5[n]
        for n, b in members.items()
        if n in OFFICIAL_MD5
    }
    if (
        hashlib.md5(joined).hexdigest() == TARBALL_MD5
        and all(checked.values())
        and len(checked) == 6
    ):
        whole.write_bytes(joined)
        note.write_text(f"full data: {whole}, md5 {TARBALL_MD5}; batch md5s official: {checked}\n")
        return Data(whole)
    bad = [n for n, ok in checked.items() if not ok and check_md5]
    train = [members[n] for n in sorted(members) if n.startswith("data_batch") and n not in bad]
    if not train:
        raise ValueError(
            f"no complete training batch file in the parts {names}; bring part aa first"
        )
    import numpy as np

    records = np.frombuffer(b"".join(train), np.uint8).reshape(-1, RECORD)
    held_out = "test_batch.bin" not in members or "test_batch.bin" in bad
    if held_out:  # the last sixth of what we have stands in for the test split
        cut = len(records) - len(records) // 6
        scored, records = records[cut:], records[:cut]
    else:
        scored = np.frombuffer(members["test_batch.bin"], np.uint8).reshape(-1, RECORD)
    folder = write_partial(cache / "partial", records, scored)
    scoring = (
        f"{len(scored)} HELD-OUT images, the last sixth of the training files written as test_batch.bin "
        "(the tarball's test_batch.bin is missing): every figure on them is a held-out accuracy, not a "
        "test accuracy"
        if held_out
        else f"{len(scored)} test images (test_batch.bin)"
    )
    note.write_text(
        f"PARTIAL data: parts {names} of the tarball; complete batch files {sorted(members)} (official md5: "
        f"{checked}). Training on {5 * (len(records) // 5)} train images in {folder}, scored on {scoring}.\n"
        "Not comparable with the committed full-data CPU run. For the CPU comparison, put the same parts in "
        ".data-parts/ on the CPU machine, run `python -m benchmarks.gpu --data-only`, then "
        "`python -m keras_ultimus.train --data PATH` with the path it prints.\n"
    )
    return Data(folder, held_out)


def write_partial(root: Path, train, scored) -> Path:
    """Five equal data_batch files of the `train` records and a test_batch of `scored`, under `root`."""
    per_file, folder = len(train) // 5, root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(5):
        (folder / f"data_batch_{k + 1}.bin").write_bytes(
            train[k * per_file : (k + 1) * per_file].tobytes()
        )
    (folder / "test_batch.bin").write_bytes(scored.tobytes())
    return folder

"""A call's results packed to come back: a few archives and text files, each under the 16 MiB a file may be.

gpu-results.tar.gz holds the logs and tables of the work folder (a long log only its tail) and the models
that fit, best-ranked first; gpu-models-extra.tar.gz the models that did not fit; packed.txt says what was
dropped. summary.txt gathers the stages' summaries.
"""

import io
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

LIMIT = 15 * 2**20  # one archive's content, under the 16 MiB a file may be when it comes back
LOG_TAIL = 100_000  # a log's last bytes: Keras' progress bars make a 24-epoch log a few hundred kB
KEEP = {".csv", ".json", ".md", ".png", ".txt", ".log", ".keras"}
SKIP_DIRS = {"backup", "tensorboard", "dry-run-data", "lr_find_scratch"}


def select_models(
    base: int, models: list[tuple[Path, int]], limit: int = LIMIT
) -> tuple[list, list, list]:
    """Models (path, size), in order, into the first archive after `base` bytes of logs, then a second; rest dropped."""
    first, second, dropped, size, extra = [], [], [], base, 0
    for path, n in models:
        if size + n <= limit:
            first.append(path)
            size += n
        elif extra + n <= limit:
            second.append(path)
            extra += n
        else:
            dropped.append(path)
    return first, second, dropped


def write_archive(path: Path, files: list[Path], work: Path, note: str | None = None) -> None:
    """A tar.gz of `files` relative to `work` (a long log only its tail), plus packed.txt when `note` is given."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in files:
            if p.suffix == ".log" and p.stat().st_size > LOG_TAIL:
                with open(p, "rb") as f:
                    f.seek(-LOG_TAIL, os.SEEK_END)
                    body = b"[gpu: the log's last %d bytes]\n" % LOG_TAIL + f.read()
                info = tarfile.TarInfo(str(p.relative_to(work)))
                info.size, info.mtime = len(body), int(p.stat().st_mtime)
                tar.addfile(info, io.BytesIO(body))
            else:
                tar.add(p, arcname=str(p.relative_to(work)))
        if note is not None:
            info = tarfile.TarInfo("packed.txt")
            info.size = len(note.encode())
            tar.addfile(info, io.BytesIO(note.encode()))
    os.replace(tmp, path)


def kept_files(work: Path) -> tuple[list[Path], list[Path]]:
    """The work folder's files worth bringing back, and its models, each sorted."""
    files, models = [], []
    for root, dirs, names in os.walk(work):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            if path.suffix in KEEP and not name.startswith(".") and name != "best.keras":
                (models if path.suffix == ".keras" else files).append(path)
    return files, models


def pack(work: Path, out: Path, rank: Callable[[Path], int]) -> None:
    """What matters of `work` into `out` (models by `rank`, lowest first), and work/summary/*.txt as summary.txt."""
    if (out / "versions.txt").is_file():
        shutil.copy(out / "versions.txt", work / "versions.txt")
    files, models = kept_files(work)
    base = sum(
        min(p.stat().st_size, LOG_TAIL) if p.suffix == ".log" else p.stat().st_size for p in files
    )
    ranked = sorted(models, key=lambda p: (rank(p), str(p)))
    first, second, dropped = select_models(base, [(p, p.stat().st_size) for p in ranked])
    manifest = [
        f"gpu-results.tar.gz: {len(files) + len(first)} files, "
        f"{(base + sum(p.stat().st_size for p in first)) / 2**20:.1f} MiB before compression"
    ]
    if second:
        manifest.append(
            "gpu-models-extra.tar.gz (did not fit the first archive): "
            + " ".join(str(p.relative_to(work)) for p in second)
        )
    if dropped:
        manifest.append(
            "DROPPED (over 2 x 15 MiB), still on the machine under the work folder: "
            + " ".join(str(p.relative_to(work)) for p in dropped)
        )
    if base > LIMIT:
        manifest.append("WARNING: the logs and tables alone are over 15 MiB")
    write_archive(out / "gpu-results.tar.gz", files + first, work, "\n".join(manifest) + "\n")
    if second:
        write_archive(out / "gpu-models-extra.tar.gz", second, work)
    else:
        (out / "gpu-models-extra.tar.gz").unlink(missing_ok=True)
    for name in ("gpu-results.tar.gz", "gpu-models-extra.tar.gz"):
        if (out / name).is_file() and (out / name).stat().st_size > 16 * 2**20:
            manifest.append(f"WARNING: {name} is over 16 MiB: it won't come back")
    stages = sorted((work / "summary").glob("*.txt"))
    text = "".join(f"== {p.stem}\n{p.read_text()}" for p in stages)
    (out / "summary.txt").write_text(text + "== packed\n" + "\n".join(manifest) + "\n")

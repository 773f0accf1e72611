"""What a call brings besides data: wheels installed into a folder put on the path, an earlier session's results.

The lent machine has no Keras and no network: the wheels carried in .whl/ go into a folder (pip `--target`)
that this process and its children import from, before anything imports Keras.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

SITE = Path("/tmp/site")  # the lent machine's folder for them
MARK = ".installed"  # in the site folder once every wheel is in


def install_wheels(
    wheels: list[Path],
    site: Path,
    modules: tuple[str, ...] = ("keras", "keras_tuner"),
    log: Callable[[str], None] = print,
) -> bool:
    """pip install `wheels` into `site` once, unless every one of `modules` imports; True when `site` holds them."""
    if not (site / MARK).exists() and wheels and not all(map(importlib.util.find_spec, modules)):
        log(f"installing {len(wheels)} wheels from {wheels[0].parent} into {site}")
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
        pip += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site)]
        subprocess.run([*pip, *map(str, wheels)], check=True)
        (site / MARK).touch()
    return (site / MARK).exists()


def use_site(site: Path) -> None:
    """Import from `site` first, in this process and (through PYTHONPATH) in its children; once."""
    if str(site) in sys.path:
        return
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p
    )


def merge_carry(carry: Path, work: Path) -> list[Path]:
    """Copy an earlier session's files from `carry` into `work`, keeping what is there; return those copied."""
    copied = []
    for path in sorted(carry.rglob("*")) if carry.is_dir() else []:
        target = work / path.relative_to(carry)
        if path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(target)
    return copied

"""Where a result came from: the checkout's git commit (run.json, bench.json) and the library versions (no Keras)."""

import importlib
import platform
import subprocess
from pathlib import Path

PACKAGES = ("keras", "keras_tuner", "torch", "jax", "numpy", "pandas", "matplotlib", "tensorflow")


def git_state(folder: Path | None = None) -> dict:
    """The checkout keras_ultimus runs from (or `folder`): commit and if tracked files differ (None outside git)."""
    here = folder or Path(__file__).parent

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """'name version' lines: Python, each package as this process imports it (or why not), and torch's CUDA device."""
    lines = [f"python {platform.python_version()} {platform.machine()}"]
    for name in packages:
        try:
            lines.append(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
        except Exception as e:  # a missing or broken package is what this is for
            first = str(e).splitlines()[0] if str(e) else ""
            lines.append(f"{name} missing: {type(e).__name__} {first}".rstrip())
    try:
        import torch

        cuda = torch.cuda.is_available()
        lines.append(f"cuda {cuda} {torch.cuda.get_device_name(0) if cuda else ''}".rstrip())
    except Exception:
        pass
    return lines

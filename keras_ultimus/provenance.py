"""Where a result came from: the keras-ultimus checkout's git commit, for run.json and bench.json (no Keras)."""

import subprocess
from pathlib import Path


def git_state(folder: Path | None = None) -> dict:
    """The checkout keras_ultimus runs from (or `folder`): commit and whether tracked files differ (None outside git)."""
    here = folder or Path(__file__).parent

    def git(*args):
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}

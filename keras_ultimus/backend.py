"""Check the Keras backend before Keras is imported, so a bad one is a one-line error.

Keras picks its backend from `$KERAS_BACKEND`, else the `"backend"` key of
`keras.json` in `$KERAS_HOME` (default `~/.keras`), else TensorFlow, and raises
with a traceback on import when that backend is unknown or not installed.
This module imports no Keras.
"""

import importlib
import json
import os
import sys
from pathlib import Path

# One pip command per supported backend; the pins match requirements.txt.
INSTALL = {
    "tensorflow": "pip install tensorflow==2.21.0",
    "torch": "pip install torch==2.13.0",
    "jax": "pip install jax==0.10.2 jaxlib==0.10.2",
}


def keras_config_path() -> Path:
    """The `keras.json` Keras reads, found the way Keras finds it."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]) / "keras.json"
    home = Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")
    return home / ".keras" / "keras.json"


def configured_backend() -> tuple[str, str]:
    """The backend Keras will load, and where that choice comes from."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    path = keras_config_path()
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):  # Keras ignores a missing or unreadable file too
        config = {}
    if isinstance(config, dict) and "backend" in config:
        return str(config["backend"]), str(path)
    return "tensorflow", "Keras' default"


def check_backend() -> str:
    """Return the configured backend; exit with code 2 and a one-line error if it can't load."""
    name, source = configured_backend()
    if name not in INSTALL:
        fail(
            f"Keras backend {name!r} (from {source}) is not one keras-ultimus runs on; "
            f"set KERAS_BACKEND to one of: {', '.join(INSTALL)}"
        )
    try:
        importlib.import_module(name)
    except Exception as e:  # a broken install (e.g. a jax/jaxlib mismatch) is not always an ImportError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(
            f"Keras backend {name!r} (from {source}) is not installed ({reason}); "
            f"install it with `pip install -r requirements.txt` or `{INSTALL[name]}`"
        )
    return name


def fail(message: str) -> None:
    """Print `error: message` to stderr and exit with code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)

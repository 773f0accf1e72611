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


def prepare(verbose: bool = False, devices: int | None = None) -> str:
    """Set up the process before Keras starts: check the backend, quiet TF logs, split devices.

    Call it first in every CLI, after parsing flags and before importing Keras
    or any module that imports it. `verbose` keeps TensorFlow's C++ log lines
    (so does a `TF_CPP_MIN_LOG_LEVEL` the user set). `devices` makes that many
    logical CPU devices for JAX (TensorFlow's are made by `keras_ultimus.distribute`).
    Returns the backend name.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # oneDNN, CUDA probing, CPU feature lines
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    name = check_backend()
    if devices and name == "jax":
        if "jax" in sys.modules and "jax._src.xla_bridge" in sys.modules:
            fail("--devices must be set before JAX starts; run it in a fresh process")
        flag = f"--xla_force_host_platform_device_count={devices}"
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), flag]).strip()
    return name

"""Check the Keras backend before Keras is imported (`import keras_ultimus` does), so a bad one is one line.

Keras picks its backend from `$KERAS_BACKEND`, else the `"backend"` key of
`keras.json` in `$KERAS_HOME` (default `~/.keras`), else TensorFlow, and raises
with a traceback on import when that backend is unknown or not installed.
This module imports no Keras.
"""

import contextlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# One pip command per supported backend; the pins match requirements.txt.
INSTALL = {
    "tensorflow": "pip install tensorflow==2.21.0",
    "torch": "pip install torch==2.13.0",
    "jax": "pip install jax==0.10.2 jaxlib==0.10.2",
}
# ONNX export and predict, pinned as in requirements.txt.
INSTALL_ONNX = "pip install tf2onnx==1.17.0 onnx==1.23.2 onnxruntime==1.32.0"


QUIET_MARK = "KERAS_ULTIMUS_QUIET_TF"


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


def backend_problem(quiet: bool = False) -> tuple[str, str | None]:
    """The backend to use, and why it can't load (one line), or None when it imports.

    When KERAS_BACKEND is unset and the configured backend isn't installed, an installed one is used:
    KERAS_BACKEND is set to it (before TensorFlow's import, which may import Keras) with a one-line note.
    """
    name, source = configured_backend()
    if name not in INSTALL:
        return name, (
            f"Keras backend {name!r} (from {source}) is not one keras-ultimus runs on; "
            f"set KERAS_BACKEND to one of: {', '.join(INSTALL)}"
        )
    reason = import_failure(name, quiet)
    if reason is None:
        return name, None
    if (
        source != "KERAS_BACKEND"
    ):  # not the user's explicit choice: an installed backend will do, said in one line
        for other in INSTALL:
            if other == name or importlib.util.find_spec(other) is None:
                continue
            os.environ["KERAS_BACKEND"] = other
            if import_failure(other, quiet) is None:
                print(
                    f"note: Keras backend {name!r} (from {source}) is not installed; using {other!r}, which is "
                    f"(set KERAS_BACKEND to choose)",
                    file=sys.stderr,
                )
                return other, None
            del os.environ["KERAS_BACKEND"]
    return name, (
        f"Keras backend {name!r} (from {source}) is not installed ({reason}); install it with "
        f"`{INSTALL[name]}` (or `pip install -r requirements.txt` in the keras-ultimus checkout)"
    )


def import_failure(name: str, quiet: bool) -> str | None:
    """Import backend `name`: None if it works, else why not in one line."""
    try:
        with silenced_stderr(quiet):
            importlib.import_module(name)
    except (
        Exception
    ) as e:  # a broken install (e.g. a jax/jaxlib mismatch) is not always an ImportError
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def check_backend(quiet: bool = False) -> str:
    """Return the backend to use; exit with code 2 and a one-line error if none can load."""
    name, problem = backend_problem(quiet)
    if problem:
        fail(problem)
    return name


def command_args() -> list[str] | None:
    """This process's arguments when it runs one of the package's commands, else None (a library user)."""
    orig = getattr(sys, "orig_argv", [])
    if "-m" in orig[:-1] and orig[orig.index("-m") + 1].startswith("keras_ultimus"):
        return orig[orig.index("-m") + 2 :]
    if sys.argv and Path(sys.argv[0]).name.startswith("ultimus-"):
        return sys.argv[1:]
    return None


def quiet_tensorflow(verbose: bool) -> bool:
    """Hide TensorFlow's C++ logs unless `verbose` or the user set `TF_CPP_MIN_LOG_LEVEL`; True if hidden."""
    # QUIET_MARK: the level was set by a parent's prepare (bench, launch, export children), not by the user.
    quiet = not verbose and ("TF_CPP_MIN_LOG_LEVEL" not in os.environ or QUIET_MARK in os.environ)
    if quiet:
        os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", QUIET_MARK: "1"})
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    return quiet


def configure() -> None:
    """Run by `import keras_ultimus` before it imports Keras: check the backend and quiet TF's start-up.

    In a command (`python -m keras_ultimus...`, an `ultimus-*` script) a backend that can't
    load exits with code 2 and one line; a library user gets an ImportError saying the same.
    A library user's import is quiet too (TF's C++ start-up lines, a cuInit "error" among them, are
    noise there), unless Keras already runs or the user set `TF_CPP_MIN_LOG_LEVEL`.
    """
    args = command_args()
    if args is not None:
        quiet = quiet_tensorflow(bool({"-v", "--verbose"} & set(args)))
    else:
        quiet = "keras" not in sys.modules and quiet_tensorflow(False)
    _, problem = backend_problem(quiet)
    if problem and args is not None:
        fail(problem)
    if problem:
        raise ImportError(problem)


def fail(message: str) -> None:
    """Print `error: message` to stderr and exit with code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def silenced_stderr(quiet: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while quiet: TF's C++ start-up lines ignore its log level."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_tensorflow_beside(quiet: bool) -> None:
    """Import an installed TensorFlow under torch or jax, and hide the GPUs from it.

    tf.data and TensorBoard may use TensorFlow in a torch or jax process; left
    alone, TensorFlow would take the GPU's memory before the backend could.
    A missing or broken TensorFlow is fine: the NumPy pipeline runs without it.
    """
    if importlib.util.find_spec("tensorflow") is None:
        return
    try:
        with silenced_stderr(quiet):
            import tensorflow as tf
    except Exception:  # noqa: BLE001  a stub or broken install: run TF-free
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF already started its devices in this process
        pass


def prepare(verbose: bool = False, devices: int | None = None) -> str:
    """Set up a command's process before Keras computes: check the backend, quiet TF logs, split devices.

    Call it first in every CLI, after parsing flags (`import keras_ultimus` has
    already checked the backend and imported Keras, which starts no device).
    TensorFlow's C++ log lines are hidden unless `verbose` or the user set
    `TF_CPP_MIN_LOG_LEVEL`. `devices` makes that many
    logical CPU devices for JAX (TensorFlow's are made by `keras_ultimus.training.distribute`).
    Under torch or jax, an installed TensorFlow is imported here with its GPUs hidden.
    Returns the backend name.
    """
    quiet = quiet_tensorflow(verbose)
    name, _ = configured_backend()
    if devices and name == "jax":  # read when JAX starts its backends, on first use, not at import
        flag = f"--xla_force_host_platform_device_count={devices}"
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), flag]).strip()
    name = check_backend(quiet)
    if name != "tensorflow":
        import_tensorflow_beside(quiet)
    return name

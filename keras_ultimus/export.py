"""Export a trained model for serving (`ultimus-export --help`).

SavedModel (default) goes to the TF Serving layout `OUT/<version>/`, a new integer version each time; `--format onnx`
writes the file `OUT.onnx` (`keras_ultimus.serving.export` describes both). A `.keras` file saved under any backend
exports here. The export itself runs on the TensorFlow backend: when this process uses another backend, `main` runs
the export in a child process with `KERAS_BACKEND=tensorflow` and returns its exit code. Keras and TensorFlow are
imported inside the functions, after `main` has called `backend.prepare`.
"""

import argparse
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from keras_ultimus.backend import prepare
from keras_ultimus.errors import ArgumentParser, EpilogHelpFormatter, UserError, cli, prog
from keras_ultimus.serving.export import NEEDS_TENSORFLOW, export_onnx, export_saved_model
from keras_ultimus.serving.presets import describe_presets, preset_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: one model, as RUN_OR_MODEL or --preset."""
    p = ArgumentParser(
        prog=prog("keras_ultimus.export", "ultimus-export"),
        description="Export a trained model or a shipped preset for serving: a TF Serving SavedModel or an ONNX "
        "file.",
        epilog="presets (no training needed):\n" + describe_presets(),
        formatter_class=EpilogHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="RUN_OR_MODEL",
        nargs="?",
        help="a run folder (uses its model.keras) or a .keras file",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="a shipped pretrained model instead of RUN_OR_MODEL (listed below)",
    )
    p.add_argument(
        "--out",
        default="export/ultimus",
        help="SavedModel base folder, gets OUT/<version>/; for onnx the file OUT.onnx "
        "(default: export/ultimus)",
    )
    p.add_argument(
        "--format",
        choices=("savedmodel", "onnx"),
        default="savedmodel",
        help="savedmodel: TF Serving layout (default); onnx: one file, same inputs and outputs",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    args = p.parse_args(argv)
    if (args.model is None) == (args.preset is None):
        p.error("give one model: RUN_OR_MODEL or --preset NAME")
    return args


def export_in_child(argv: list[str]) -> int:
    """Run this CLI in a child process on the TensorFlow backend and return its exit code."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    # The child must import this same keras_ultimus, installed or not.
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "keras_ultimus.export", *argv], env=env).returncode


@cli
def main(argv: list[str] | None = None) -> int:
    """Load the model and export it in the chosen format; exit code 2 for bad input."""
    args = parse_args(argv)
    model_path = (
        preset_path(args.preset) if args.preset else args.model
    )  # an unknown name fails before any setup
    if find_spec("tensorflow") is None:
        raise UserError(NEEDS_TENSORFLOW)
    keras = sys.modules.get("keras")
    backend = keras.backend.backend() if keras else prepare(verbose=args.verbose)
    if backend != "tensorflow":
        # Keras is (or would be) on another backend here; never replace the caller's process.
        return export_in_child(sys.argv[1:] if argv is None else list(argv))
    from keras_ultimus.serving.loading import float32_copy, load_keras_model

    model = float32_copy(
        load_keras_model(model_path)
    )  # serve in float32, whatever precision it trained in
    if args.format == "onnx":
        out = Path(args.out)
        written = export_onnx(
            model, out if out.suffix == ".onnx" else out.with_name(out.name + ".onnx")
        )
    else:
        written = export_saved_model(model, args.out)
    print(f"Exported {args.preset or args.model} -> {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

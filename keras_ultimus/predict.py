"""Classify images with a trained or exported model (`ultimus-predict --help`).

MODEL is a shipped preset (`--preset NAME`, no training needed), an exported SavedModel version
folder, its base folder (the latest version is used), an exported `.onnx` file, a `.keras` file or
a run folder.
Only a SavedModel needs TensorFlow: a `.keras` file runs on any Keras backend
and an `.onnx` file on onnxruntime. IMAGE is an image file of any size, mode
and format Pillow reads (resized to 32x32 RGB), a `.npy` uint8 batch of shape
(N, 32, 32, 3), or a folder of them. Images stream through in batches, so memory
stays about one batch for any number of them. Every readable image is classified;
every unreadable input is named in one line on stderr, and then the exit code is 2.
"""

import argparse
import json
import sys
import textwrap

from keras_ultimus.backend import prepare
from keras_ultimus.errors import ArgumentParser, EpilogHelpFormatter, cli, prog
from keras_ultimus.serving.predict import ImageError, batches, top_classes
from keras_ultimus.serving.presets import describe_presets, preset_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; with --preset, every positional argument is an image."""
    name = prog("keras_ultimus.predict", "ultimus-predict")
    p = ArgumentParser(
        prog=name,
        usage=f"{name} [-h] [--json] [-v] (MODEL | --preset NAME) IMAGE [IMAGE ...]",
        description="Classify images with a shipped preset, a trained (.keras, run folder) or an exported "
        "(SavedModel, .onnx) model.",
        epilog="presets (no training needed):\n" + describe_presets(),
        formatter_class=EpilogHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="SavedModel (version or base folder), .onnx, .keras or run folder",
    )
    p.add_argument(
        "images",
        metavar="IMAGE",
        nargs="*",
        help="image file (PNG, JPEG, ...), .npy uint8 (N, 32, 32, 3), or a folder of them",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="a shipped pretrained model instead of MODEL (listed below)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    args = p.parse_args(argv)
    if args.preset:
        args.images = [args.model, *args.images] if args.model else args.images
        args.model = None
    if not args.images:
        p.error("give MODEL (or --preset NAME) and at least one IMAGE")
    return args


@cli
def main(argv: list[str] | None = None) -> int:
    """Predict every readable image; name each unreadable input on stderr and then exit 2."""
    args = parse_args(argv)
    model = (
        preset_path(args.preset) if args.preset else args.model
    )  # an unknown name fails before any setup
    prepare(verbose=args.verbose)
    from keras_ultimus.serving.loading import load_predictor

    predictor = load_predictor(model)
    failed = []

    def report(error: ImageError) -> None:
        print(f"error: {error}", file=sys.stderr)
        failed.append(error)

    first = True
    for names, pixels in batches(args.images, report):
        for name, top in zip(names, top_classes(predictor(pixels))):
            result = {"image": name, "top": top}
            if args.json:  # the same text as json.dumps(results, indent=2), written as it comes
                print(
                    ("[\n" if first else ",\n")
                    + textwrap.indent(json.dumps(result, indent=2), "  "),
                    end="",
                )
            else:
                print(
                    f"{name}: "
                    + ", ".join(f"{t['class_name']} {t['probability']:.3f}" for t in top)
                )
            first = False
    if args.json:
        print("[]" if first else "\n]")
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

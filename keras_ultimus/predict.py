"""Classify images with a trained or exported model (`ultimus-predict --help`).

MODEL is an exported SavedModel version folder, its base folder (the latest
version is used), an exported `.onnx` file, a `.keras` file or a run folder.
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
from keras_ultimus.errors import ArgumentParser, cli
from keras_ultimus.serving.predict import ImageError, batches, top_classes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = ArgumentParser(
        prog="ultimus-predict",
        description="Classify images with a trained (.keras, run folder) or exported (SavedModel, .onnx) model.",
    )
    p.add_argument("model", metavar="MODEL", help="SavedModel (version or base folder), .onnx, .keras or run folder")
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="image file (PNG, JPEG, ...), .npy uint8 (N, 32, 32, 3), or a folder of them")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's C++ log lines")
    return p.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> int:
    """Predict every readable image; name each unreadable input on stderr and then exit 2."""
    args = parse_args(argv)
    prepare(verbose=args.verbose)
    from keras_ultimus.serving.loading import load_predictor

    predictor = load_predictor(args.model)
    failed = []

    def report(error: ImageError) -> None:
        print(f"error: {error}", file=sys.stderr)
        failed.append(error)

    first = True
    for names, pixels in batches(args.images, report):
        for name, top in zip(names, top_classes(predictor(pixels))):
            result = {"image": name, "top": top}
            if args.json:  # the same text as json.dumps(results, indent=2), written as it comes
                print(("[\n" if first else ",\n") + textwrap.indent(json.dumps(result, indent=2), "  "), end="")
            else:
                print(f"{name}: " + ", ".join(f"{t['class_name']} {t['probability']:.3f}" for t in top))
            first = False
    if args.json:
        print("[]" if first else "\n]")
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

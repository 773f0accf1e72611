"""Make a shipped preset from a committed report: its slim model and a metadata.json of where it came from.

Usage: python tools/make_preset.py NAME REPORT_FOLDER [--prefix s2-] --description TEXT [--data CIFAR10]

Copies REPORT_FOLDER/<prefix>model.keras to keras_ultimus/presets/NAME/model.keras and writes metadata.json from
<prefix>run.json. With --data (or $CIFAR10_PATH), it scores the model on the full test split, plain and with flip
TTA, and records those figures; otherwise the run's own final figures.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/make_preset.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from keras_ultimus.serving.presets import METADATA_FILE, MODEL_FILE, PRESETS_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    """Copy the model and write its metadata."""
    p = argparse.ArgumentParser(prog="python tools/make_preset.py", description=main.__doc__)
    p.add_argument("name")
    p.add_argument("report", type=Path)
    p.add_argument(
        "--prefix", default="", help="file prefix of the chosen seed in the report (e.g. s2-)"
    )
    p.add_argument("--description", required=True)
    p.add_argument("--data", default=os.environ.get("CIFAR10_PATH"))
    args = p.parse_args(argv)

    import keras

    from keras_ultimus.datasets.cifar10 import load_cifar10
    from keras_ultimus.serving.loading import load_keras_model
    from keras_ultimus.training.evaluation import accuracies

    report = args.report.resolve()
    source, info = (
        report / f"{args.prefix}model.keras",
        json.loads((report / f"{args.prefix}run.json").read_text()),
    )
    model = load_keras_model(source)
    final = info["final"]
    tta = final.get("test_accuracy_flip_tta")
    scores = {
        "test_accuracy": round(final["val_accuracy"], 4),
        "test_accuracy_flip_tta": tta and round(tta, 4),
        "test_images": info["config"].get("limit_test") or 10000,
        "scored_by": "the run (run.json final)",
    }
    if args.data:
        _, (x_test, y_test) = load_cifar10(args.data)
        scores = {
            **accuracies(model, x_test, y_test, 500),
            "test_images": len(y_test),
            "scored_by": "tools/make_preset.py on the full CIFAR-10 test split",
        }
    folder = PRESETS_DIR / args.name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / MODEL_FILE)
    config = {k: v for k, v in info["config"].items() if k != "data"}
    metadata = {
        "description": args.description,
        **scores,
        "trainable_params": int(sum(keras.ops.size(w) for w in model.trainable_weights)),
        "params": int(model.count_params()),
        "run": {
            "report": str(report.relative_to(REPO)),
            "model": source.name,
            "run_json": f"{args.prefix}run.json",
            "command": info["command"],
            "commit": info["keras_ultimus"]["commit"],
            "backend": info["backend"],
            "versions": info["versions"],
            "machine": info["machine"],
            "wall_seconds": info.get("wall_seconds"),
            "finished": info.get("finished"),
            "config": config,
        },
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"{folder}: {json.dumps(scores)}")


if __name__ == "__main__":
    main()

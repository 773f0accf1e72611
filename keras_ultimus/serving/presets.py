"""Pretrained models shipped inside the package, by name, the keras-hub way; imports no Keras itself.

Each preset is a folder `keras_ultimus/presets/<name>/` holding a slim `model.keras` and a `metadata.json`: its
test accuracy (plain and with flip TTA), parameter count, and the run that made it (command, commit, report folder).
`tools/make_preset.py` writes them from a committed report.
"""

import json
import os
from pathlib import Path

from keras_ultimus.errors import UserError

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
MODEL_FILE, METADATA_FILE = "model.keras", "metadata.json"


def list_presets() -> dict[str, dict]:
    """The shipped presets: name -> metadata (description, test accuracy, params, the run that made it)."""
    if not PRESETS_DIR.is_dir():
        return {}
    return {
        folder.name: json.loads((folder / METADATA_FILE).read_text())
        for folder in sorted(PRESETS_DIR.iterdir())
        if (folder / METADATA_FILE).is_file()
    }


def preset_names() -> list[str]:
    """The shipped presets' names, sorted."""
    return sorted(list_presets())


def describe_presets() -> str:
    """One line per preset, for `--help`: name, test accuracy, what it is."""
    lines = []
    for name, meta in list_presets().items():
        tta = meta.get("test_accuracy_flip_tta")
        score = f"{meta['test_accuracy']:.2%}" + (f" ({tta:.2%} flip TTA)" if tta else "")
        lines.append(f"  {name}: {score}, {meta['description']}")
    return "\n".join(lines) or "  (none installed)"


def preset_path(preset: str) -> Path:
    """The `model.keras` of a preset; an unknown name raises UserError (a ValueError) naming the valid ones."""
    path = PRESETS_DIR / str(preset) / MODEL_FILE
    if os.sep in str(preset) or str(preset) not in list_presets() or not path.is_file():
        valid = ", ".join(preset_names()) or "none"
        raise UserError(f"preset={str(preset)!r}: unknown preset; valid presets: {valid}")
    return path


def from_preset(preset: str):
    """Load a shipped preset by name as a ready Keras model (uint8-range images (N, 32, 32, 3) in, 10 logits out)."""
    from keras_ultimus.serving.loading import load_keras_model

    return load_keras_model(preset_path(preset))

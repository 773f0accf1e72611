"""A run setting as a dataclass field: what its flag and its checks need, and the checks; no Keras."""

import dataclasses
import math
from dataclasses import field
from typing import Any

from keras_ultimus.errors import UserError

# A field's kind says how a value is checked and how its flag parses text.
KINDS = ("int", "float", "str", "bool", "max_lr", "widths", "steps")


def setting(
    default: Any,
    help: str,
    kind: str,
    *,
    flag: str | None = None,
    choices: tuple | None = None,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> Any:
    """A dataclass field of a run setting, with what its flag and its checks need in the metadata."""
    meta = {
        "help": help,
        "kind": kind,
        "flag": flag,
        "choices": choices,
        "minimum": minimum,
        "above": above,
        "below": below,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def check_value(f: dataclasses.Field, value: object, source: str = "--config") -> object:
    """Check one value against its setting's type; return it (ints as floats where a float is due)."""
    meta, kind = f.metadata, f.metadata["kind"]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is None:
        ok = f.default is None
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif meta["choices"]:
        ok = value in meta["choices"]
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in ("float", "max_lr"):
        ok = (number and math.isfinite(value)) or (kind == "max_lr" and value == "auto")
        value = float(value) if ok and value != "auto" else value
    elif kind in ("widths", "steps"):
        ok = isinstance(value, (str, list, tuple))
    else:
        ok = isinstance(value, str)
    if not ok:
        expected = (
            f"one of {list(meta['choices'])}"
            if meta["choices"]
            else "true or false"
            if kind == "bool"
            else "a number or 'auto'"
            if kind == "max_lr"
            else {"float": "float", "int": "int"}.get(kind, "str")
        )
        raise UserError(f"{source} key {f.name!r}: expected {expected}, got {value!r}")
    return value


def check_range(f: dataclasses.Field, value: object) -> None:
    """Check a value against its setting's range; the error names the argument (`epochs=0: ...`)."""
    meta = f.metadata
    if value is None or value == "auto" or isinstance(value, (str, list, tuple, bool)):
        return
    low, above, below = meta["minimum"], meta["above"], meta["below"]
    if above is not None and not value > above:
        rule = "a positive number" if above == 0 else f"above {above}"
        raise UserError(
            f"{f.name}={value!r}: must be {rule}"
            + (" or 'auto'" if meta["kind"] == "max_lr" else "")
        )
    if (low is not None and value < low) or (below is not None and not value < below):
        rule = (
            f"in [{low}, {below})"
            if low is not None and below is not None
            else f"below {below}"
            if below is not None
            else f"at least {low}"
        )
        raise UserError(f"{f.name}={value!r}: must be {rule}")

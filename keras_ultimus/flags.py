"""Command-line flags generated from typed configs (`keras_ultimus.config`'s, the search's); imports no Keras.

Commands call `add_flags(parser, names)`; the library never sees argparse.
"""

import argparse
import dataclasses
from typing import Any

from keras_ultimus.config import FIELDS
from keras_ultimus.errors import FLAG_NAMES


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a setting: `--name-with-dashes` unless its metadata names another."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


FLAG_NAMES.update(
    {
        f.name: flag_of(f)[2:]
        for f in FIELDS.values()
        if f.metadata["flag"] and f.default is not True
    }
)


def parse_max_lr(text: str) -> float | str:
    """A --max-lr value: a number, or "auto"."""
    return text if text == "auto" else float(text)


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: list[str] | tuple[str, ...],
    defaults: dict | None = None,
    fields: dict[str, dataclasses.Field] = FIELDS,
) -> list[argparse.Action]:
    """Add the flags of the settings `names` (their dests are the names); return their actions.

    `fields` holds the settings: the run config's, or another typed config's (the tuner's search settings).
    """
    actions = []
    for name in names:
        f, meta = fields[name], fields[name].metadata
        default = (defaults or {}).get(
            name, f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        )
        kwargs: dict[str, Any] = {"dest": name, "help": meta["help"], "default": default}
        if meta["kind"] == "bool":
            kwargs["action"] = "store_false" if f.default is True else "store_true"
        else:
            kwargs["type"] = {"int": int, "float": float, "max_lr": parse_max_lr}.get(
                meta["kind"], str
            )
            kwargs["choices"] = meta["choices"]
        actions.append(parser.add_argument(flag_of(f), **kwargs))
    return actions

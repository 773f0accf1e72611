"""The user-facing error types, and the wrapper every command-line tool runs under.

Library code raises `UserError` (a `ValueError`) or one of its subclasses for bad
input (a missing file, a wrong argument value, a corrupt tarball), naming the
Python argument as Keras does: `out=runs/x: run folder exists`. `cli` turns it
into one line on stderr in the command's terms (`--out runs/x: ...`) and exit
code 2, so no user ever sees a traceback for their own mistake.
"""

import argparse
import errno
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

Main = Callable[[list[str] | None], int]
# A write failed for want of space (a full disk, a quota, the file-size limit): these errnos, this exit code.
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
EXIT_NO_SPACE = 3


class UserError(ValueError):
    """Bad input from the user; the message is one line naming the Python argument (`out=...`)."""


class FolderExistsError(UserError, FileExistsError):
    """A folder that must be new exists already."""


class MissingFileError(UserError, FileNotFoundError):
    """An input file or folder is not there."""


# Python argument names whose command-line flag is not `--` + the name with dashes.
FLAG_NAMES = {"num_blocks": "blocks"}
# `name=value`, never a version pin (`tensorflow==2.21.0`) or a comparison.
_ARGUMENT = re.compile(r"(?<![=<>!~])\b([a-z][a-z0-9_]*)=(?![=])(?:'([^' ]*)'|(True)\b|(?=\S))?")


def in_flag_terms(message: str, flag_names: dict[str, str] | None = None) -> str:
    """A library message in a command's terms: `out=runs/x: ...` becomes `--out runs/x: ...`."""
    names = {**FLAG_NAMES, **(flag_names or {})}

    def flag(match: re.Match) -> str:
        name = match.group(1)
        value = match.group(2)
        text = "--" + names.get(name, name).replace("_", "-")
        if match.group(3):  # a switch: name=True is the flag alone
            return text
        return f"{text} {value}" if value is not None else f"{text} "

    return _ARGUMENT.sub(flag, message)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """`--help` lines end with the flag's default, unless it is unset, off, a switch, or the help text gives it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or not action.option_strings
            or action.nargs == 0
        ):
            return text
        default = (
            ",".join(map(str, action.default))
            if isinstance(action.default, list)
            else action.default
        )
        return f"{text} (default: {default})".strip()


class EpilogHelpFormatter(DefaultsHelpFormatter):
    """DefaultsHelpFormatter that keeps the epilog's line breaks (a list of presets, one per line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def prog(module: str, script: str) -> str:
    """A command's name as the user runs them, for usage lines: its console `script` when this process is one."""
    return script if Path(sys.argv[0]).name.startswith("ultimus-") else f"python -m {module}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, `error: ...` with exit code 2, without the usage block."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def one_line(message: object) -> str:
    """The first non-empty line of `message` (errors from libraries can span many)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0] if lines else type(message).__name__


def cli(main: Main) -> Main:
    """Wrap a CLI `main(argv) -> int`: UserError exits 2 and a full disk 3, each with one line; Ctrl-C exits 130."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {in_flag_terms(one_line(e))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        except OSError as e:
            if e.errno not in NO_SPACE:
                raise
            print(
                f"error: {e.filename or 'a file'}: write failed ({e.strerror}); free space and run it again",
                file=sys.stderr,
            )
            return EXIT_NO_SPACE

    return wrapper

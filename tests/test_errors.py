"""The one user-error type, the CLI wrapper and the one-line argument parser."""

import sys

import pytest

from keras_ultimus.errors import ArgumentParser, UserError, cli, one_line, prog


@cli
def fake_main(argv: list[str] | None = None) -> int:
    """A CLI that fails the way its argument asks."""
    if argv == ["user"]:
        raise UserError("data.tar: truncated\nsecond line the user must not see")
    if argv == ["interrupt"]:
        raise KeyboardInterrupt
    if argv == ["bug"]:
        raise ValueError("a bug is not a user error")
    return 0


def test_user_error_is_one_line_and_exit_code_2(capsys):
    assert fake_main(["user"]) == 2
    assert capsys.readouterr().err == "error: data.tar: truncated\n"


def test_ctrl_c_exits_130(capsys):
    assert fake_main(["interrupt"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_bug_still_raises_with_its_traceback():
    with pytest.raises(ValueError):
        fake_main(["bug"])


def test_one_line_skips_blank_lines_and_falls_back_to_the_type():
    assert one_line("\n\n  first \nsecond") == "first"
    assert one_line(ValueError("")) == "ValueError"


@pytest.mark.parametrize("argv", [["--epochs", "two"], ["--unknown"], ["--kind", "x"]])
def test_argument_parser_reports_a_bad_flag_in_one_line(argv, capsys):
    p = ArgumentParser(prog="ultimus-x")
    p.add_argument("--epochs", type=int)
    p.add_argument("--kind", choices=("a", "b"))
    with pytest.raises(SystemExit) as exit_info:
        p.parse_args(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("error: ")
        and lines[0].endswith("(see ultimus-x --help)")
    )


def test_help_lines_end_with_the_default_unless_unset_off_a_switch_or_already_given():
    from keras_ultimus.errors import ArgumentParser

    parser = ArgumentParser(prog="p")
    parser.add_argument("--epochs", type=int, default=24, help="passes")
    parser.add_argument("--widths", default=[32, 256, 48], help="conv widths")
    parser.add_argument("--out", help="folder")
    parser.add_argument("--flag", action="store_true", help="a switch")
    parser.add_argument(
        "--no-augment", dest="augment", action="store_false", help="no augmentation"
    )
    parser.add_argument("--lr", default=0.1, help="peak LR (default: 0.1, or 'auto')")
    text = " ".join(parser.format_help().split())
    assert "passes (default: 24)" in text and "conv widths (default: 32,256,48)" in text
    assert "folder (default" not in text and "a switch (default" not in text
    assert (
        "no augmentation (default" not in text
    )  # a store_false switch defaults to True: saying so would mislead
    assert text.count("default: 0.1") == 1


def test_a_user_error_is_a_value_error_and_file_errors_are_their_os_kinds():
    from keras_ultimus.errors import FolderExistsError, MissingFileError

    assert issubclass(UserError, ValueError)
    assert issubclass(FolderExistsError, FileExistsError) and issubclass(
        FolderExistsError, ValueError
    )
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(
        MissingFileError, ValueError
    )


@pytest.mark.parametrize(
    "message, expected",
    [
        ("out=runs/x: run folder exists", "--out runs/x: run folder exists"),
        (
            "distribute='foo': must be one of none, mirrored",
            "--distribute foo: must be one of none, mirrored",
        ),
        ("num_blocks=0: must be at least 1", "--blocks 0: must be at least 1"),
        (
            "runs/s: unreadable; start over with fresh=True",
            "runs/s: unreadable; start over with --fresh",
        ),
        ("data.tar: truncated (x == 3)", "data.tar: truncated (x == 3)"),
        (  # a pip command the message prints stays as it is, pins and all
            "export needs TensorFlow: pip install tensorflow==2.21.0",
            "export needs TensorFlow: pip install tensorflow==2.21.0",
        ),
        ("needs jax>=0.4.30 and a!=b", "needs jax>=0.4.30 and a!=b"),
        (
            "preset='nope': unknown preset; valid presets: a, b",
            "--preset nope: unknown preset; valid presets: a, b",
        ),
    ],
)
def test_the_command_layer_names_flags_where_the_library_names_arguments(message, expected, capsys):
    from keras_ultimus.errors import in_flag_terms

    assert in_flag_terms(message) == expected

    @cli
    def command(argv=None):
        raise UserError(message)

    assert command([]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"


def test_help_shows_a_zero_default_and_not_an_unset_one(capsys):
    parser = ArgumentParser(prog="p")
    parser.add_argument("--seed", type=int, default=0, help="seeds it")
    parser.add_argument("--limit", type=int, help="first N")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "seeds it (default: 0)" in out and "first N\n" in out


def test_prog_is_the_console_script_when_run_as_one(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ultimus-launch"])
    assert prog("keras_ultimus.train", "ultimus-train") == "ultimus-train"
    monkeypatch.setattr(sys, "argv", ["/repo/keras_ultimus/train.py"])
    assert prog("keras_ultimus.train", "ultimus-train") == "python -m keras_ultimus.train"

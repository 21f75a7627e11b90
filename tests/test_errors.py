"""How every command line ends (``timm_longtail.errors.run_command``): an exit status and, for bad
input or an output that could not be written, one ``error:`` line instead of a traceback."""
from __future__ import annotations

import importlib

import pytest

from conftest import REPO_ROOT, load_script
from timm_longtail.errors import OutputWriteError, UserInputError, run_command


def _raise(error: BaseException):
    def body():
        raise error
    return body


def test_the_body_s_status_is_the_exit_status(capsys):
    assert run_command(lambda: None) == 0
    assert run_command(lambda: 143) == 143
    assert capsys.readouterr().err == ""


def test_bad_input_is_one_error_line_and_status_2(capsys):
    assert run_command(_raise(UserInputError("no such model 'x'"))) == 2
    assert capsys.readouterr().err == "error: no such model 'x'\n"


def test_bad_input_raised_in_a_loader_worker_keeps_only_its_message(capsys):
    # what a DataLoader worker's exception looks like once re-raised in the main process
    wrapped = UserInputError("Caught UserInputError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                             "call last):\n  File \"x.py\", line 1\ntimm_longtail.errors.UserInputError: image 7 is "
                             "truncated\n")
    assert run_command(_raise(wrapped)) == 2
    assert capsys.readouterr().err == "error: image 7 is truncated\n"


def test_an_output_that_could_not_be_written_is_one_line_and_status_1(capsys):
    assert run_command(_raise(OutputWriteError("cannot write results.json: disk full"))) == 1
    assert capsys.readouterr().err == "error: cannot write results.json: disk full\n"


def test_other_errors_are_not_swallowed():
    with pytest.raises(RuntimeError):
        run_command(_raise(RuntimeError("a bug")))


ENTRY_POINTS = {  # how each command line is called in-process: (script file or None, module, argv)
    "train.py": ("train.py", None, ["--bogus"]),
    "train.py YAML flag": ("train.py", None, ["--config"]),
    "train.py type": ("train.py", None, ["--epochs", "1.5"]),
    "validate.py": ("validate.py", None, ["--bogus"]),
    "analyze.py": ("analyze.py", None, ["calibration", "--bogus"]),
    "zoo": (None, "timm_longtail.zoo.__main__", ["build", "--bogus"]),
    "hub": (None, "timm_longtail.hub.__main__", ["export", "--bogus"]),
    "convert": (None, "timm_longtail.convert.__main__", ["model.pth", "--out", "x", "--bogus"]),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_a_bad_flag_is_the_usage_line_and_one_error_line(name, capsys):
    """argparse's own error prints the whole wrapped usage (39 lines for train.py) before the message."""
    script, module, argv = ENTRY_POINTS[name]
    main = load_script(REPO_ROOT / script, f"short_errors_{script}").main if script else \
        importlib.import_module(module).main
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: ") and lines[1].startswith("error: "), lines

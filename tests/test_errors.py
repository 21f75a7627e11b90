"""How every command line ends (``timm_longtail.errors.run_command``): an exit status and, for bad
input or an output that could not be written, one ``error:`` line instead of a traceback."""
from __future__ import annotations

import pytest

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

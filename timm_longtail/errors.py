"""The error types users see: bad input, and an output that could not be written."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Optional


class UserInputError(ValueError):
    """Bad input from a user (unknown model, wrong class count, missing data, corrupt file).

    The message names what to fix. ``train.py``/``validate.py`` print it as one line and exit 2
    instead of showing a traceback.
    """


class OutputWriteError(OSError):
    """A checkpoint or result could not be written (disk full, no permission, file too large).

    Files are written under a temporary name and renamed, so the file it would have replaced is
    unchanged and no partial file is left; the message says so. The scripts print it as one line
    and exit 1.
    """


def user_error_message(error: BaseException) -> str:
    """The one-line message of a UserInputError, also when a DataLoader worker re-raised it.

    A worker's exception reaches the main process as ``"Caught X in DataLoader worker ...
    Original Traceback ... X: <message>"``; users need only the last part.
    """
    text = str(error).strip()
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        marker = "UserInputError: "
        text = last.split(marker, 1)[1] if marker in last else last
    return " ".join(text.split())


def run_command(body: Callable[[], Optional[int]]) -> int:
    """Run a command line's body and return its exit status: what the body returns (``None`` is 0),
    2 after one ``error:`` line for bad input, 1 after one for an output that could not be written.
    Every entry point (train.py, validate.py, analyze.py, the hub and zoo commands, scripts) ends the
    same way, so no user sees a traceback for either."""
    try:
        status = body()
    except UserInputError as error:
        print(f"error: {user_error_message(error)}", file=sys.stderr)
        return 2
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if status is None else status


class ShortErrorParser(argparse.ArgumentParser):
    """argparse's parser whose error is one usage line and one ``error:`` line (exit status 2).

    argparse prints the whole wrapped usage (39 lines for train.py) before ``prog: error: ...``; a
    mistyped flag then scrolls the message away. ``--help`` still prints everything. Sub-commands
    (``add_subparsers``) are parsers of this class too.
    """

    def error(self, message: str) -> NoReturn:
        usage = self.format_usage().strip()
        if "\n" in usage:  # too long for one line: name the command and where the flags are listed
            usage = f"usage: {self.prog} [options] ({self.prog} --help lists them)"
        self.exit(2, f"{usage}\nerror: {message}\n")

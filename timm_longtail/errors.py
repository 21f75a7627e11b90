"""The one error type users see for bad input."""


class UserInputError(ValueError):
    """Bad input from a user (unknown model, wrong class count, missing data, corrupt file).

    The message names what to fix. ``train.py``/``validate.py`` print it as one line and exit 2
    instead of showing a traceback.
    """

"""Read the reference repositories' checkpoints without running any of their code.

RIDE's trainer pickles its whole ``parse_config.ConfigParser`` (paths included) beside the weights,
NCL's and Cao et al.'s code pickle numpy scalars; none of those files loads under
``torch.load(weights_only=True)`` as it is, and ``weights_only=False`` would run whatever a
downloaded file asks for. Here torch's weights-only unpickler gets an allow-list for exactly those
foreign objects, each rebuilt as inert data: the ``ConfigParser`` becomes :class:`ForeignObject` (its
attributes as a dict), a ``pathlib`` path its text, numpy scalars numbers. Any other global (a
``__reduce__`` calling ``os.system``, ``eval``, an unknown class) stops the load before it is called.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, Iterator, Union

import numpy as np
import torch
from numpy._core.multiarray import scalar as numpy_scalar  # numpy 2's home; numpy 1's pickles say numpy.core

from ..errors import UserInputError

__all__ = ["ForeignObject", "foreign_pickle_globals", "load_foreign_checkpoint"]


class ForeignObject:
    """An object of a reference repository's own class, rebuilt as plain data: its pickled
    attributes in :attr:`state`, nothing of its code. ``ConfigParser`` keeps its config in
    ``state['_config']``."""

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __getitem__(self, key: str) -> Any:  # the reference reads config["arch"] through the parser too
        return self.state.get("_config", {})[key]

    def __repr__(self) -> str:
        return f"ForeignObject({sorted(self.state)})"


class ForeignConfigParser(ForeignObject):
    """RIDE's ``parse_config.ConfigParser``."""


def _posix_path(*parts: str) -> str:
    return str(PurePosixPath(*parts))


def _windows_path(*parts: str) -> str:
    return str(PureWindowsPath(*parts))


def _numpy_dtypes() -> list:
    names = ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType", "Int8DType",
             "UInt8DType", "BoolDType")
    return [getattr(np.dtypes, name) for name in names if hasattr(np.dtypes, name)]


def _allowed() -> list:
    """Every global a reference checkpoint may name, under the names its pickle uses."""
    allowed: list = [
        (ForeignConfigParser, "parse_config.ConfigParser"),
        (np.dtype, "numpy.dtype"),
        (numpy_scalar, "numpy.core.multiarray.scalar"),
        (numpy_scalar, "numpy._core.multiarray.scalar"),
        *_numpy_dtypes(),
    ]
    for module in ("pathlib", "pathlib._local"):
        allowed += [(_posix_path, f"{module}.PosixPath"), (_posix_path, f"{module}.PurePosixPath"),
                    (_windows_path, f"{module}.WindowsPath"), (_windows_path, f"{module}.PureWindowsPath")]
    return allowed


@contextmanager
def foreign_pickle_globals() -> Iterator[None]:
    """Within the block, ``torch.load(weights_only=True)`` (ours or timm's) also reads the reference
    checkpoints' foreign objects as inert data (module docstring); nothing else is allowed."""
    with torch.serialization.safe_globals(_allowed()):
        yield


_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """What torch's weights-only error says was wrong, without the lines around it that advise
    ``weights_only=False`` (exactly what must not be done here)."""
    lines = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in str(error).splitlines()]
    specific = [line for line in lines if line and not line.startswith(_TORCH_ADVICE)]
    return specific[0] if specific else type(error).__name__


def load_foreign_checkpoint(path: Union[str, os.PathLike], mmap: bool = False) -> Dict[str, Any]:
    """A checkpoint file as a dict, loaded weights-only with the foreign allow-list. A file that asks
    for any other global, is truncated or is not a checkpoint: one :class:`UserInputError`, nothing run.
    ``mmap`` maps the tensors instead of reading them (cheap when only shapes are needed)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint not found: {path}")
    try:
        with foreign_pickle_globals():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(error)
        if "GLOBAL" not in reason:  # no forbidden global named: bytes the unpickler cannot parse
            raise UserInputError(f"{path} is not a readable checkpoint (corrupt or not a checkpoint?): "
                                 f"{reason[:200]}") from None
        raise UserInputError(f"{path} was refused: it asks to run code or build an object a checkpoint does not "
                             f"hold ({reason[:200]}); nothing in it was run") from None
    except Exception as error:  # torch raises many types for truncated or foreign files: one message for all
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserInputError(f"{path} is not a readable checkpoint (corrupt or truncated?): {reason[:200]}") from None
    if not isinstance(checkpoint, dict):
        raise UserInputError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint

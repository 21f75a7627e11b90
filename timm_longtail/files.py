"""Files and folders written whole or not at all, with ordinary permissions, and a run folder's lock.

Every writer of results, checkpoints and exports goes through here: a file is written under a temporary
name beside its target and renamed onto it, a folder is filled aside and swapped in, so a crash or a full
disk never leaves half a file under the real name.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Union

import torch
from huggingface_hub.utils.sha import sha_fileobj

try:
    import fcntl
except ImportError:  # Windows: no flock; exclusive_lock does not lock there
    fcntl = None

from .errors import OutputWriteError, UserInputError

__all__ = [
    "apply_umask", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "current_umask",
    "exclusive_lock", "json_safe", "replace_dir", "sha256_of_file",
]

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write_fn: Callable[[str], None]) -> Path:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``: readers never see a partial file.

    An ``OSError`` on the way (disk full, say) removes the temporary file and becomes an
    :class:`OutputWriteError` that says the previous ``path`` is unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError) and not isinstance(error, OutputWriteError):
            kept = "the previous file is unchanged" if path.exists() else "no file was written"
            raise OutputWriteError(f"could not write {path} ({error.strerror or error}): {kept}") from None
        raise
    return path


def current_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


def apply_umask(path: PathLike) -> None:
    """Ordinary permissions (``0666``/``0777`` less the umask) for a file or a folder and its files:
    ``mkstemp``, ``mkdtemp`` and safetensors create owner-only ones, and results are for sharing."""
    path, umask = Path(path), current_umask()
    files = [child for child in path.iterdir() if child.is_file()] if path.is_dir() else [path]
    if path.is_dir():
        path.chmod(0o777 & ~umask)
    for file in files:
        file.chmod(0o666 & ~umask)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` by rename (no partial file, synced first), with ordinary permissions."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        apply_umask(tmp)

    return atomic_write(path, write)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, payload: Any) -> Path:
    """``payload`` as indented JSON (NaN/inf as null, tensors and paths as plain values: :func:`json_safe`)."""
    return atomic_write_text(path, json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """Plain, strict JSON values: mappings (keys as text), lists for tuples, arrays and tensors,
    numpy and tensor scalars as Python numbers, NaN/inf as null (e.g. the accuracy of an empty shot
    group), anything else as its text (paths). Results, checkpoints' metadata and exports use it."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def sha256_of_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, by huggingface_hub's chunked hasher (weight files can be large)."""
    with open(path, "rb") as handle:
        return sha_fileobj(handle).hex()


def replace_dir(new: PathLike, target: PathLike) -> None:
    """Put the folder ``new`` (filled beside ``target``) at ``target`` by rename, replacing what was there:
    the old folder is moved aside first and removed after, so ``target`` is always one whole folder."""
    new, target = Path(new), Path(target)
    aside = None
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, aside / target.name)
    os.replace(new, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


# Ours, not the ``filelock`` package: filelock opens its lock file read-write, and a run folder is locked
# itself (a lock file inside would join the run's files and keep a failed run's empty folder from going).
@contextlib.contextmanager
def exclusive_lock(path: PathLike, busy: str, *, wait: bool = False) -> Iterator[None]:
    """Hold an advisory lock (``flock``) on ``path``, a folder or a lock file (created if missing), for
    the ``with`` block. Another process asking for it meanwhile gets ``UserInputError(busy)`` at once,
    or waits with ``wait``. The kernel drops the lock when its process dies, so a killed run never
    leaves a stale lock behind. (No locking on Windows, which has no ``flock``.)"""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise UserInputError(busy) from None
        yield
    finally:
        os.close(fd)  # releases the lock

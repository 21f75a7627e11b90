"""Checkpoints that carry what a long-tail result depends on, and load without unpickling code.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values only, so
``torch.load(weights_only=True)`` reads it: ``state_dict``, ``model_name``, ``model_kwargs``,
``class_counts`` (training images per class: the losses and the shot splits depend on them),
``class_names``, ``dataset``, ``recipe``, ``epoch``, ``version``, plus whatever training state the
writer adds. Files are written to a temporary name and renamed, so a crash never leaves half a
checkpoint under the real name.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from timm.utils import unwrap_model  # the bare model inside DDP / torch.compile wrappers

try:
    import fcntl
except ImportError:  # Windows: no flock; exclusive_lock does not lock there
    fcntl = None

from ._paths import portable_paths
from .convert import load_foreign_checkpoint
from .convert.checkpoint import read_reference_checkpoint, to_timm_checkpoint
from .errors import OutputWriteError, UserInputError

__all__ = [
    "json_safe", "command_history",
    "apply_umask", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "current_umask",
    "exclusive_lock", "build_model_from_checkpoint", "code_version", "lineage_entry", "load_checkpoint",
    "load_weights_file", "run_lineage", "save_checkpoint", "start_command", "unwrap_model",
]

PathLike = Union[str, os.PathLike]


def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    from . import __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{__version__}+g{sha}" if sha else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def atomic_write(path: PathLike, write_fn) -> Path:
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


def save_checkpoint(
        path: PathLike,
        model: nn.Module,
        *,
        model_name: str,
        class_counts: Sequence[int],
        class_names: Optional[Sequence[str]] = None,
        model_kwargs: Optional[Mapping[str, Any]] = None,
        extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write a checkpoint atomically. ``extra`` holds training state (optimizer, epoch, recipe...)."""
    model = unwrap_model(model)
    kwargs = dict(num_classes=model.num_classes, num_experts=getattr(model, "num_experts", 1))
    kwargs.update(model_kwargs or {})
    payload: Dict[str, Any] = dict(
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        model_name=model_name,
        model_kwargs=kwargs,
        class_counts=[int(c) for c in class_counts],
        class_names=[str(n) for n in class_names] if class_names is not None else None,
        version=code_version(),
    )
    payload.update(extra or {})
    def write(tmp: str) -> None:
        buffer = io.BytesIO()  # serialised first: torch's zip writer turns a full disk into a RuntimeError
        torch.save(payload, buffer)
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())

    return atomic_write(path, write)


def _load_safetensors(path: Path) -> Dict[str, Any]:

    try:
        state_dict = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise UserInputError(f"{path} is not a readable safetensors file (corrupt or truncated?): {error}") from None
    checkpoint: Dict[str, Any] = dict(state_dict=state_dict)
    for key, value in metadata.items():  # our exporter stores JSON-encoded metadata values
        try:
            checkpoint[key] = json.loads(value)
        except json.JSONDecodeError:
            checkpoint[key] = value
    return checkpoint


_RESUME_FLAG = re.compile(r"\s--resume(?:=|\s+)(?:'[^']*'|\S+)")


def start_command(command: Any) -> Any:
    """A train.py command as the recipe that reproduces its run: ``--resume <checkpoint>`` removed (a
    resumed run ends as a straight run of the same arguments would), unless the resume changed the
    recipe (``--resume-changes-recipe``): no straight run reproduces that one."""
    if not isinstance(command, str) or "--resume-changes-recipe" in command:
        return command
    return _RESUME_FLAG.sub("", command)


def command_history(resume: Optional[Mapping[str, Any]], command: str,
                    recipe_changed: bool = False) -> Tuple[str, List[str]]:
    """(the command that reproduces the run, every command that trained it, oldest first). A resume that
    continues the recorded recipe keeps the command its checkpoint records (``--resume <ckpt>`` alone names
    no setting); one that changed it keeps its own. Both come after the resumed checkpoint's history."""
    earlier: List[str] = []
    reproducing = start_command(command)
    if resume is not None:
        earlier = list(resume.get("command_history") or ([resume["command"]] if resume.get("command") else []))
        if not recipe_changed and resume.get("command"):
            reproducing = resume["command"]
    return reproducing, [*earlier, command]


def lineage_entry(checkpoint: Mapping[str, Any], role: str) -> Dict[str, Any]:
    """What a run records about a checkpoint it started from (``role``: ``"initial_checkpoint"``) or
    distilled from (``"teacher"``): its model, stage, epoch, code version and full recipe, paths made
    portable. A teacher's own lineage is kept inside its entry, under ``"lineage"``."""

    recipe = dict(checkpoint.get("recipe") or {})
    dataset = checkpoint.get("dataset") if isinstance(checkpoint.get("dataset"), Mapping) else {}
    entry: Dict[str, Any] = dict(
        role=role, model_name=checkpoint.get("model_name"), method=recipe.get("method"), stage=recipe.get("stage"),
        dataset=dataset.get("name"), epoch=checkpoint.get("epoch"), version=checkpoint.get("version"),
        command=start_command(portable_paths(checkpoint.get("command"))), recipe=portable_paths(recipe),
    )
    if role == "teacher" and checkpoint.get("lineage"):
        entry["lineage"] = list(checkpoint["lineage"])
    return entry


def run_lineage(resume: Optional[Mapping[str, Any]] = None, initial: Optional[Mapping[str, Any]] = None,
                teacher: Optional[Mapping[str, Any]] = None) -> list:
    """The ``lineage`` a run writes into its checkpoints and ``final.json``, oldest first.

    A run started from ``--initial-checkpoint`` (e.g. RIDE's router stage) records that checkpoint's
    own lineage, then the checkpoint itself (``role: initial_checkpoint``); a distillation run adds
    its ``--teacher`` (``role: teacher``). A resumed run keeps the lineage its checkpoint recorded.
    """
    if resume is not None and isinstance(resume.get("lineage"), list):
        return list(resume["lineage"])
    lineage: list = []
    if initial is not None:
        lineage.extend(initial.get("lineage") or [])
        lineage.append(lineage_entry(initial, "initial_checkpoint"))
    if teacher is not None:
        lineage.append(lineage_entry(teacher, "teacher"))
    return lineage


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a train.py checkpoint (or a safetensors file) with ``weights_only=True``; a checkpoint saved
    by RIDE's, NCL's or LDAM-DRW's own trainer comes back converted (:mod:`timm_longtail.convert`)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    checkpoint = load_foreign_checkpoint(path)  # weights-only (module docstring of timm_longtail.convert)
    reference = read_reference_checkpoint(path, checkpoint=checkpoint)
    if reference is not None:  # saved by RIDE's, NCL's or LDAM-DRW's own trainer
        return to_timm_checkpoint(reference)
    if "state_dict" not in checkpoint:
        raise UserInputError(f"{path} holds no 'state_dict': not a timm-longtail checkpoint")
    return checkpoint


def build_model_from_checkpoint(
        source: Union[PathLike, Mapping[str, Any]], model_name: Optional[str] = None, **overrides: Any,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Re-create the model a checkpoint was trained as, with its weights. Returns (model, checkpoint)."""
    checkpoint = dict(source) if isinstance(source, Mapping) else load_checkpoint(source)
    name = model_name or checkpoint.get("model_name")
    if not name:
        raise UserInputError("the checkpoint does not record its model name: pass --model")
    kwargs = dict(checkpoint.get("model_kwargs") or {})
    kwargs.update(overrides)
    try:
        model = timm.create_model(name, **kwargs)
    except RuntimeError as error:
        raise UserInputError(f"cannot create model {name!r}: {error}") from None
    _load_state_dict(model, checkpoint["state_dict"], f"checkpoint of {checkpoint.get('model_name', name)}")
    return model, checkpoint


def _load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) or first[0]
        raise UserInputError(f"the {what} does not fit this model ({detail[:300]})") from None


def load_weights_file(model: nn.Module, path: PathLike) -> Dict[str, Any]:
    """Load a safetensors file or a checkpoint's weights into ``model`` (strict). Returns the file's dict."""
    checkpoint = load_checkpoint(path)
    _load_state_dict(unwrap_model(model), checkpoint["state_dict"], f"weights in {path}")
    return checkpoint


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

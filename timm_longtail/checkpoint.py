"""Checkpoints that carry what a long-tail result depends on, and load without unpickling code.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values only, so
``torch.load(weights_only=True)`` reads it: ``state_dict``, ``model_name``, ``model_kwargs``,
``class_counts`` (training images per class: the losses and the shot splits depend on them),
``class_names``, ``dataset``, ``recipe``, ``epoch``, ``version``, plus whatever training state the
writer adds. Files are written to a temporary name and renamed, so a crash never leaves half a
checkpoint under the real name.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from timm.utils import unwrap_model  # the bare model inside DDP / torch.compile wrappers

from ._paths import portable_paths
from .convert import load_foreign_checkpoint
from .convert.checkpoint import read_reference_checkpoint, to_timm_checkpoint
from .errors import UserInputError
from .files import atomic_write

__all__ = [
    "build_model_from_checkpoint", "code_version", "command_history", "commit_of_version", "lineage_entry",
    "load_checkpoint", "load_weights_file", "run_lineage", "save_checkpoint", "start_command", "unwrap_model",
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


_COMMIT_IN_VERSION = re.compile(r"\+g([0-9a-f]{7,40})\b")


def commit_of_version(version: Any) -> Optional[str]:
    """The git commit in a :func:`code_version` (``"0.1.0+g1a2b3c4"`` -> ``"1a2b3c4"``); None without one."""
    match = _COMMIT_IN_VERSION.search(version) if isinstance(version, str) else None
    return match.group(1) if match else None


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

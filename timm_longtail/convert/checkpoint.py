"""One reference checkpoint file: read, recognised, and what it says about its own training."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Mapping, Optional, Union

import timm

from ..errors import UserInputError
from ..files import sha256_of_file
from ._pickle import ForeignObject, load_foreign_checkpoint
from .layouts import ReferenceLayout, detect_layout, is_reference_state_dict, map_state_dict

__all__ = ["ReferenceCheckpoint", "read_reference_checkpoint", "require_reference_checkpoint", "to_timm_checkpoint"]

PathLike = Union[str, os.PathLike]


@dataclass
class ReferenceCheckpoint:
    """A reference trainer's checkpoint: its dict (state dict included), the layout its tensors show,
    and the trainer's own record (RIDE's pickled config) when it has one."""

    path: Path
    checkpoint: Dict[str, Any]
    layout: ReferenceLayout

    @property
    def state_dict(self) -> Mapping[str, Any]:
        return self.checkpoint["state_dict"]

    @property
    def config(self) -> Dict[str, Any]:
        """RIDE's run config (``parse_config.ConfigParser._config``) as plain data; ``{}`` elsewhere."""
        config = self.checkpoint.get("config")
        return dict(config.state.get("_config") or {}) if isinstance(config, ForeignObject) else {}

    @property
    def resumed_from(self) -> Optional[str]:
        """The checkpoint a RIDE run started from with ``-r`` (the EA stage's stage-1 checkpoint)."""
        config = self.checkpoint.get("config")
        resume = config.state.get("resume") if isinstance(config, ForeignObject) else None
        return str(resume) if resume else None

    def dataset(self) -> Optional[Dict[str, Any]]:
        """The training data RIDE's config names (its data loader), as our dataset record; ``None``
        for files that do not say (NCL's, LDAM-DRW's)."""
        loader = self.config.get("data_loader") or {}
        name = _RIDE_LOADERS.get(loader.get("type"))
        if name is None:
            return None
        record: Dict[str, Any] = dict(name=name, split="train")
        if name in ("cifar10_lt", "cifar100_lt"):
            factor = (loader.get("args") or {}).get("imb_factor", 0.01)
            record["imbalance_factor"] = round(1.0 / float(factor), 6)
        return record

    def lineage(self) -> Dict[str, Any]:
        """What the file records about how it was trained: epoch, stage, distillation, source run."""
        config, layout = self.config, self.layout
        facts: Dict[str, Any] = dict(code=layout.source, epoch=_number(self.checkpoint.get("epoch")))
        if layout.source == "ride":
            facts["stage"] = "EA router (stage 2)" if layout.router else "experts (stage 1)"
            facts["arch_class"] = self.checkpoint.get("arch")
            facts["config_name"] = config.get("name")
            facts["epochs_in_config"] = _number((config.get("trainer") or {}).get("epochs"))
            if config.get("distill"):
                teacher = config.get("distill_arch") or {}
                facts["distilled_from"] = dict(arch=teacher.get("type"), experts=(teacher.get("args") or {}).get(
                    "num_experts"), checkpoint=_file_name(config.get("distill_checkpoint")))
            if self.resumed_from:  # the EA stage starts from the experts' checkpoint; stage 1 from a resume
                facts["started_from"] = _file_name(self.resumed_from)
                if layout.router and (m := re.search(r"epoch(\d+)", self.resumed_from)):
                    facts["experts_stage_epochs"] = int(m.group(1))
        elif layout.source == "ncl":
            facts["best_epoch"] = _number(self.checkpoint.get("best_epoch"))
        return {k: v for k, v in facts.items() if v is not None}


_RIDE_LOADERS = {  # RIDE's data loader classes -> our dataset names (long-tailed training sets only)
    "ImbalanceCIFAR10DataLoader": "cifar10_lt", "ImbalanceCIFAR100DataLoader": "cifar100_lt",
    "ImageNetLTDataLoader": "imagenet_lt", "iNaturalistDataLoader": "inat2018",
}


def to_timm_checkpoint(reference: ReferenceCheckpoint) -> Dict[str, Any]:
    """The file as one of our checkpoint dicts (what ``train.py`` saves, less its training state):
    weights under our names for ``layout.model_name()``, its keywords, the dataset when the file
    says, and ``converted_from`` (file, SHA-256, code, lineage)."""
    layout = reference.layout
    try:
        model = timm.create_model(layout.model_name(), **layout.model_kwargs())
    except RuntimeError as error:
        raise UserInputError(f"cannot create {layout.model_name()} for {reference.path}: {error}") from None
    state_dict = map_state_dict(reference.state_dict, model.state_dict(), layout)
    return dict(state_dict=state_dict, model_name=layout.model_name(), model_kwargs=layout.model_kwargs(),
                dataset=reference.dataset(), epoch=reference.lineage().get("epoch"),
                converted_from=dict(file=reference.path.name, sha256=sha256_of_file(reference.path),
                                    layout=layout.describe(), **reference.lineage()))


def _number(value: Any) -> Any:
    try:
        return value.item() if hasattr(value, "item") else value
    except (ValueError, RuntimeError):
        return None


def _file_name(path: Any) -> Optional[str]:
    return PurePosixPath(str(path)).name if path else None


def read_reference_checkpoint(path: PathLike, mmap: bool = False,
                              checkpoint: Optional[Dict[str, Any]] = None) -> Optional[ReferenceCheckpoint]:
    """The file as a :class:`ReferenceCheckpoint`, or ``None`` when it is one of ours (a train.py
    checkpoint or a timm state dict under our names). Unreadable or unsafe files raise
    :class:`UserInputError` (nothing in them is run). ``checkpoint``: the file's dict, already read."""
    path = Path(path)
    checkpoint = load_foreign_checkpoint(path, mmap=mmap) if checkpoint is None else checkpoint
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, Mapping) or "model_name" in checkpoint or not is_reference_state_dict(state_dict):
        return None
    if state_dict is checkpoint:
        checkpoint = dict(state_dict=state_dict)
    return ReferenceCheckpoint(path, checkpoint, detect_layout(state_dict))


def require_reference_checkpoint(path: PathLike) -> ReferenceCheckpoint:
    reference = read_reference_checkpoint(path)
    if reference is None:
        raise UserInputError(f"{path} is a timm-longtail checkpoint already, not one of a reference trainer's")
    return reference

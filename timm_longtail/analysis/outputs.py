"""One pass of a model over an evaluation set, keeping every forward mode's logits.

The analyses work on logits, not on accuracy: they need the whole predicted distribution per
image (calibration, hardest negatives, disagreement) and, in routed mode, how many experts each
image used. Each batch is loaded once and run through every requested mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from ..errors import UserInputError
from ..evaluation import resolve_forward_modes
from ..precision import autocast_for

__all__ = ["ModelOutputs", "collect_outputs", "expert_modes"]


@dataclass
class ModelOutputs:
    """Per forward mode, the ``(N, C)`` float32 logits of the evaluated images, and their labels."""

    targets: torch.Tensor  # (N,) int64
    logits: Dict[str, torch.Tensor] = field(default_factory=dict)
    experts_used: Optional[torch.Tensor] = None  # (N,) int64 in 1..E, routed mode only

    @property
    def num_classes(self) -> int:
        return int(next(iter(self.logits.values())).shape[-1])

    def expert_logits(self, num_experts: int) -> torch.Tensor:
        """``(E, N, C)`` logits of the experts, from the ``expert:<i>`` modes."""
        return torch.stack([self.logits[f"expert:{i}"] for i in range(num_experts)])


def expert_modes(model: nn.Module) -> List[str]:
    """``expert:0 .. expert:E-1``; one clear error for a model with fewer than two experts."""
    num_experts = int(getattr(model, "num_experts", 1) or 1)
    if num_experts < 2:
        raise UserInputError(f"this analysis compares experts, and the model has {num_experts}: "
                             f"use a multi-expert model (e.g. ride_resnet32_3e)")
    return [f"expert:{i}" for i in range(num_experts)]


@torch.no_grad()
def collect_outputs(model: nn.Module, loader: Iterable, modes: Sequence[str] | str, *,
                    device: torch.device | str = "cpu", amp: bool = False, channels_last: bool = False,
                    num_classes: Optional[int] = None) -> ModelOutputs:
    """Run every mode of ``modes`` (validated as ``validate.py`` does) on each batch of ``loader``."""
    modes = resolve_forward_modes(model, modes)
    multi_expert = callable(getattr(model, "forward_modes", None))
    device = torch.device(device)
    chunks: Dict[str, List[torch.Tensor]] = {mode: [] for mode in modes}
    targets: List[torch.Tensor] = []
    used: List[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        for images, target in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            for mode in modes:
                with autocast_for(device, amp):
                    if mode == "routed":
                        logits, experts_used = model.forward_routed(images)
                    else:
                        logits = model(images, mode=mode) if multi_expert else model(images)
                if num_classes is not None and logits.shape[-1] != num_classes:
                    raise UserInputError(
                        f"the model predicts {logits.shape[-1]} classes but the dataset has {num_classes}")
                chunks[mode].append(logits.float().cpu())
                if mode == "routed":
                    used.append(experts_used.cpu().long())
            targets.append(torch.as_tensor(target).long().cpu())
    finally:
        model.train(was_training)
    if not targets:
        raise UserInputError("the evaluation set is empty")
    return ModelOutputs(targets=torch.cat(targets), logits={m: torch.cat(c) for m, c in chunks.items()},
                        experts_used=torch.cat(used) if used else None)

"""How many experts routing calls per image (RIDE, Fig. 6), per split and per class.

In routed mode an image leaves after the first ``k`` experts when the router is confident; RIDE
shows that head images mostly stop at one expert while tail images use more. For each split and
each class: the share of images that used ``k = 1 .. E`` experts, the top-1 accuracy of each of
those groups (``None`` when empty) and the mean number of experts.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch

from ..data import ShotSplit
from .groups import split_masks

__all__ = ["expert_usage"]


def _usage(used: torch.Tensor, correct: torch.Tensor, num_experts: int) -> Dict[str, Any]:
    n = int(used.numel())
    shares: List[Optional[float]] = []
    accuracy: List[Optional[float]] = []
    for k in range(1, num_experts + 1):
        mask = used == k
        count = int(mask.sum())
        shares.append(count / n if n else None)
        accuracy.append(float(correct[mask].float().mean()) if count else None)
    return dict(n=n, share=shares, accuracy=accuracy, mean_experts=float(used.float().mean()) if n else None)


def expert_usage(experts_used: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, num_experts: int,
                 class_counts: Sequence[int], shot_split: ShotSplit) -> Dict[str, Any]:
    """Per split and per class (class order) the :func:`_usage` table of routed mode."""
    correct = logits.argmax(dim=-1) == targets
    splits = {name: _usage(experts_used[mask], correct[mask], num_experts)
              for name, mask in split_masks(targets, class_counts, shot_split).items()}
    per_class = [_usage(experts_used[targets == c], correct[targets == c], num_experts)
                 for c in range(len(class_counts))]
    return dict(num_experts=num_experts, splits=splits, per_class=per_class)

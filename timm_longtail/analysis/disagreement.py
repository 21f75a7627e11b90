"""How much the experts disagree (NCL++, Fig. 2a).

For experts ``i != j`` with predicted distributions ``p_i = softmax(z_i)``, the mean pairwise
Kullback-Leibler divergence ``1 / (E (E - 1)) sum_{i != j} KL(p_i || p_j)`` per image, averaged
over the images of a split, and the share of images whose experts do not all agree on the top-1
class.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch

from ..data import ShotSplit
from .groups import split_masks

__all__ = ["pairwise_kl", "expert_disagreement"]


def pairwise_kl(expert_logits: torch.Tensor) -> torch.Tensor:
    """``(N,)``: mean over ordered expert pairs ``i != j`` of ``KL(p_i || p_j)``, from ``(E, N, C)`` logits."""
    log_p = expert_logits.float().log_softmax(dim=-1)  # (E, N, C)
    num_experts = log_p.shape[0]
    p = log_p.exp()
    # KL(p_i || p_j) = sum_c p_i (log p_i - log p_j), for all (i, j) at once: (E, E, N)
    kl = (p[:, None] * (log_p[:, None] - log_p[None, :])).sum(dim=-1)
    return kl.sum(dim=(0, 1)) / (num_experts * (num_experts - 1))


def expert_disagreement(expert_logits: torch.Tensor, targets: torch.Tensor, class_counts: Sequence[int],
                        shot_split: ShotSplit) -> Dict[str, Any]:
    """Per split: ``n``, ``mean_pairwise_kl`` and ``top1_disagreement`` (share of images, 0-1)."""
    kl = pairwise_kl(expert_logits)
    top1 = expert_logits.argmax(dim=-1)  # (E, N)
    disagree = (top1 != top1[:1]).any(dim=0).float()
    splits = {}
    for name, mask in split_masks(targets, class_counts, shot_split).items():
        n = int(mask.sum())
        splits[name] = dict(n=n, mean_pairwise_kl=float(kl[mask].mean()) if n else None,
                            top1_disagreement=float(disagree[mask].mean()) if n else None)
    return dict(num_experts=int(expert_logits.shape[0]), splits=splits)

"""The hardest negative's softmax score per image (RIDE, Fig. 1b).

For image ``n`` with label ``y``, ``h_n = max_{j != y} softmax(z_n)_j``: how strongly the most
confusable wrong class competes. RIDE shows its distribution per split: tail images have harder
negatives, and its experts lower them. Reported per split: mean, median, the share above 0.5 (a
wrong class then wins outright), and a histogram over [0, 1].
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch

from ..data import ShotSplit
from .groups import SPLITS, split_masks

__all__ = ["hardest_negative_scores", "hardest_negative"]


def hardest_negative_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the largest softmax probability among the wrong classes of each image."""
    probs = logits.float().softmax(dim=-1)
    probs = probs.scatter(1, targets.view(-1, 1), float("-inf"))
    return probs.max(dim=-1).values


def hardest_negative(logits: torch.Tensor, targets: torch.Tensor, class_counts: Sequence[int],
                     shot_split: ShotSplit, num_bins: int = 20) -> Dict[str, Any]:
    """Per split: ``n``, ``mean``, ``median``, ``share_above_half`` and ``histogram`` (counts per
    equal-width bin of [0, 1], ``num_bins`` bins, each ``[a, b)`` and the last ``[a, 1]``;
    ``bin_edges`` beside)."""
    scores = hardest_negative_scores(logits, targets)
    out: Dict[str, Any] = dict(bin_edges=[i / num_bins for i in range(num_bins + 1)], splits={})
    for name, mask in split_masks(targets, class_counts, shot_split).items():
        chosen = scores[mask]
        if chosen.numel() == 0:
            out["splits"][name] = dict(n=0, mean=None, median=None, share_above_half=None, histogram=[0] * num_bins)
            continue
        histogram = torch.histc(chosen, bins=num_bins, min=0.0, max=1.0)
        out["splits"][name] = dict(
            n=int(chosen.numel()), mean=float(chosen.mean()), median=float(chosen.median()),
            share_above_half=float((chosen > 0.5).float().mean()), histogram=[int(v) for v in histogram.tolist()])
    out["split_order"] = list(SPLITS)
    return out

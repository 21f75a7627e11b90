"""Calibration: expected / maximum calibration error, NLL and the reliability diagram.

Confidence ``c_n = max_j softmax(z_n)_j``; images fall in ``B`` equal-width bins of (0, 1]
(``(b-1)/B < c <= b/B``). With ``acc_b`` the accuracy and ``conf_b`` the mean confidence of bin
``b`` holding ``n_b`` of ``N`` images:
``ECE = sum_b n_b / N * |acc_b - conf_b|``, ``MCE = max_b |acc_b - conf_b|`` (non-empty bins),
``NLL = -1/N sum_n log softmax(z_n)_{y_n}`` (Guo et al., 2017; 15 bins by default).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
import torch.nn.functional as F

from ..data import ShotSplit
from .groups import split_masks

__all__ = ["calibration_errors", "calibration"]


def calibration_errors(logits: torch.Tensor, targets: torch.Tensor, num_bins: int = 15) -> Dict[str, Any]:
    """ECE, MCE (both as fractions, not %), NLL, accuracy and the per-bin reliability table."""
    probs = logits.float().softmax(dim=-1)
    confidence, prediction = probs.max(dim=-1)
    correct = (prediction == targets).float()
    bin_of = (confidence * num_bins).ceil().long().clamp(1, num_bins) - 1  # (b-1)/B < c <= b/B
    bins, ece, mce = [], 0.0, 0.0
    total = confidence.numel()
    for b in range(num_bins):
        mask = bin_of == b
        count = int(mask.sum())
        row = dict(lower=b / num_bins, upper=(b + 1) / num_bins, count=count, confidence=None, accuracy=None)
        if count:
            row["confidence"] = float(confidence[mask].mean())
            row["accuracy"] = float(correct[mask].mean())
            gap = abs(row["accuracy"] - row["confidence"])
            ece += count / total * gap
            mce = max(mce, gap)
        bins.append(row)
    nll = float(F.cross_entropy(logits.float(), targets))
    return dict(n=total, ece=ece, mce=mce, nll=nll, accuracy=float(correct.mean()),
                mean_confidence=float(confidence.mean()), bins=bins)


def calibration(logits: torch.Tensor, targets: torch.Tensor, class_counts: Sequence[int], shot_split: ShotSplit,
                num_bins: int = 15) -> Dict[str, Any]:
    """:func:`calibration_errors` overall and per split (``None`` for an empty split)."""
    return dict(num_bins=num_bins, splits={
        name: calibration_errors(logits[mask], targets[mask], num_bins) if bool(mask.any()) else None
        for name, mask in split_masks(targets, class_counts, shot_split).items()})

"""Bias and variance of the 0-1 loss over models trained on resampled long-tailed sets (RIDE, Fig. 1a).

Domingos (2000): for K models' predictions ``p_kn`` on image ``n`` with label ``y_n``, the main
prediction ``m_n`` is the most frequent prediction (ties: the smallest class id);
``bias_n = L(m_n, y_n)`` and ``variance_n = 1/K sum_k L(p_kn, m_n)`` with ``L`` the 0-1 loss.
RIDE trains the K models on independently drawn long-tailed training sets
(``train.py --longtail-seed``) and reports both per class and per many/medium/few split;
the mean 0-1 loss ``1/K sum_k L(p_kn, y_n)`` is given beside them.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch

from ..data import ShotSplit
from ..errors import UserInputError
from .groups import split_masks

__all__ = ["main_prediction", "bias_variance"]


def main_prediction(predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N,)``: per image the class predicted most often by the ``(K, N)`` predictions; the
    smallest class id among ties."""
    votes = torch.nn.functional.one_hot(predictions.long(), num_classes).sum(dim=0)  # (N, C)
    return votes.argmax(dim=-1)  # argmax returns the first maximum


def bias_variance(predictions: torch.Tensor, targets: torch.Tensor, class_counts: Sequence[int],
                  shot_split: ShotSplit) -> Dict[str, Any]:
    """Per split and per class: ``n``, ``bias``, ``variance`` and ``loss`` (means over the images)."""
    if predictions.dim() != 2 or predictions.shape[0] < 2:
        raise UserInputError(f"bias and variance need the predictions of at least 2 models, got "
                             f"{predictions.shape[0] if predictions.dim() == 2 else 'one'}")
    main = main_prediction(predictions, len(class_counts))
    bias = (main != targets).float()
    variance = (predictions != main).float().mean(dim=0)
    loss = (predictions != targets).float().mean(dim=0)

    def summary(mask: torch.Tensor) -> Dict[str, Any]:
        n = int(mask.sum())
        if not n:
            return dict(n=0, bias=None, variance=None, loss=None)
        return dict(n=n, bias=float(bias[mask].mean()), variance=float(variance[mask].mean()),
                    loss=float(loss[mask].mean()))
    return dict(num_models=int(predictions.shape[0]),
                splits={name: summary(mask) for name, mask in split_masks(targets, class_counts, shot_split).items()},
                per_class=[summary(targets == c) for c in range(len(class_counts))])

"""train.py's own evaluations: the per-epoch held-out score and the final test evaluation, through
``timm_longtail.evaluation`` (as validate.py).

Going through the same functions as ``validate.py`` keeps the keys of ``final.json`` and of a
later ``validate.py`` run identical, and the accuracies computed by the same ``lt_accuracy`` metric.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .._format import percent
from ..data.longtail import ShotSplit
from ..data.transforms import eval_input_size
from ..evaluation import evaluate_mode, evaluate_model
from ..precision import Precision

__all__ = ["balanced_top1", "evaluate_final", "headline"]


def balanced_top1(model: nn.Module, loader: Iterable, mode: str, class_counts: Sequence[int],
                  device: torch.device, channels_last: bool, precision: Precision) -> float:
    """Mean of the per-class top-1 over the classes present (the held-out split is long-tailed).

    This is the model-selection score: on a balanced test set it is the plain top-1, so a
    checkpoint chosen by it is chosen for the figure that gets reported.
    """
    row = evaluate_mode(model, loader, mode, class_counts=class_counts, device=device,
                        amp=precision.dtype is not None, amp_dtype=precision.dtype, channels_last=channels_last)
    present = [acc for acc in row["per_class_accuracy"] if acc is not None]
    return float(sum(present) / len(present))


def evaluate_final(model: nn.Module, loader: Iterable, class_counts: Sequence[int], modes: Sequence[str] | None,
                   device: torch.device, img_size: int | None, channels_last: bool, precision: Precision,
                   context: dict[str, Any]) -> dict[str, Any]:
    """Every requested forward mode (default: all the model has) on the test loader.

    Returns ``{"modes": {mode: row}, "shot_split": ...}`` with validate.py's row keys (top1, top5,
    top1_many/medium/few, macs_per_image, flops_per_image, images_per_sec, experts_used_hist...).
    """
    shot_split = ShotSplit()
    rows = evaluate_model(
        model, loader, list(modes) if modes else "all", class_counts=class_counts,
        class_counts_source="training set", input_size=eval_input_size(model, img_size), shot_split=shot_split,
        device=device, amp=precision.dtype is not None, amp_dtype=precision.dtype, channels_last=channels_last,
        context=context)
    return {"modes": {row["forward_mode"]: row for row in rows}, "shot_split": shot_split.to_dict()}


def headline(result: dict[str, Any]) -> str:
    """One log line of the final evaluation: top-1 and its splits per forward mode."""
    modes = result.get("modes") or {}
    parts = []
    for mode, metrics in modes.items():
        shown = {key: percent(metrics.get(key)) for key in ("top1", "top1_many", "top1_medium", "top1_few")}
        hist = metrics.get("experts_used_hist")
        parts.append(f"{mode} top1 {shown['top1']} (many {shown['top1_many']} / medium {shown['top1_medium']} / "
                     f"few {shown['top1_few']})" + (f" experts used {hist}" if hist else ""))
    return "; ".join(parts) or "no evaluation"

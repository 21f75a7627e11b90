"""Images grouped by the many / medium / few split of their true class (training counts)."""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from ..data import ShotSplit

__all__ = ["SPLITS", "split_masks"]

SPLITS = ("all", "many", "medium", "few")


def split_masks(targets: torch.Tensor, class_counts: Sequence[int], shot_split: ShotSplit) -> Dict[str, torch.Tensor]:
    """``{"all", "many", "medium", "few"}`` -> boolean mask over the images (a split may be empty)."""
    class_split = shot_split.class_splits(class_counts)
    per_image = [class_split[int(t)] for t in targets.tolist()]
    masks = {"all": torch.ones(len(per_image), dtype=torch.bool)}
    for name in SPLITS[1:]:
        masks[name] = torch.tensor([s == name for s in per_image], dtype=torch.bool)
    return masks

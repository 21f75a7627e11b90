"""Top-1 when the test distribution is not balanced: SADE's test-agnostic protocol (Zhang et al., 2022).

From a balanced test split (``n`` images per class), eleven test sets: forward long-tailed with
imbalance ratio ``rho`` in 50, 25, 10, 5, 2 (class ``r`` of the training-count ranking keeps
``int(n * rho^(-r / (C - 1)))`` images, as the CIFAR-LT construction), the uniform set itself,
and backward long-tailed (the same counts, reversed: the tail classes now have the most images)
for ``rho`` = 2 ... 50, written 1/2 ... 1/50. Images are picked by the seeded per-class shuffle
of the CIFAR-LT code (seed 0, as SADE's loaders). Besides that sampled top-1, the exact
expectation ``sum_c n_c acc_c / sum_c n_c`` from the per-class accuracies on the whole split.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from ..data import classes_by_count, longtail_class_counts, subsample_per_class
from ..errors import UserInputError

__all__ = ["TEST_DISTRIBUTIONS", "agnostic_class_counts", "agnostic_accuracy"]

# (name, imbalance ratio of the test set, backward): SADE's order, head-heavy to tail-heavy
TEST_DISTRIBUTIONS = (
    [(f"forward{r}", r, False) for r in (50, 25, 10, 5, 2)] + [("uniform", 1, False)]
    + [(f"backward{r}", r, True) for r in (2, 5, 10, 25, 50)])


def agnostic_class_counts(per_class: int, class_counts: Sequence[int], ratio: float, backward: bool) -> List[int]:
    """Test images per class (class order) for one test distribution; the ranking is by training
    count, most first (ties by class id), which is the class order itself on CIFAR-LT."""
    ranked = classes_by_count(class_counts)
    by_rank = longtail_class_counts(per_class, len(class_counts), ratio)
    if backward:
        by_rank = by_rank[::-1]
    counts = [0] * len(class_counts)
    for rank, class_id in enumerate(ranked):
        counts[class_id] = by_rank[rank]
    return counts


def agnostic_accuracy(logits: torch.Tensor, targets: torch.Tensor, class_counts: Sequence[int],
                  seed: int = 0) -> Dict[str, Any]:
    """One row per test distribution: ``name``, ``ratio`` (backward as ``1/rho``), ``num_images``,
    ``top1`` (the sampled set, %) and ``expected_top1`` (from per-class accuracy, %)."""
    num_classes = len(class_counts)
    labels = targets.numpy()
    per_class = np.bincount(labels, minlength=num_classes)
    if per_class.min() == 0 or per_class.min() != per_class.max():
        raise UserInputError(
            f"test-agnostic accuracy needs a balanced test split (every class the same number of images); this one "
            f"has {int(per_class.min())}..{int(per_class.max())} per class (leave out --num-samples)")
    correct = (logits.argmax(dim=-1) == targets).numpy()
    class_accuracy = np.bincount(labels, weights=correct, minlength=num_classes) / per_class
    rows = []
    for name, ratio, backward in TEST_DISTRIBUTIONS:
        counts = agnostic_class_counts(int(per_class[0]), class_counts, ratio, backward)
        picked = subsample_per_class(labels, counts, seed=seed)
        rows.append(dict(
            name=name, ratio=1.0 / ratio if backward else float(ratio), num_images=int(picked.size),
            top1=100.0 * float(correct[picked].mean()),
            expected_top1=100.0 * float(np.dot(counts, class_accuracy) / sum(counts))))
    return dict(seed=seed, images_per_class=int(per_class[0]), rows=rows)

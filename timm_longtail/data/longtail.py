"""Long-tail construction (class counts, seeded subsampling) and many/medium/few shot splits.

The CIFAR-LT construction used by LDAM, RIDE and most later papers keeps, for class ``i`` of
``C`` in natural order, ``n_i = int(n_max * IF^(-i / (C - 1)))`` images, picked by shuffling the
class's indices with numpy's legacy global RNG seeded once with 0 and keeping the first ``n_i``.
:func:`make_longtail_indices` reproduces that selection exactly (same RNG stream, same order of
calls), so a CIFAR-LT subset built here holds the same images as the published ones.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import UserInputError

__all__ = [
    "SHOT_RULES",
    "ShotSplit",
    "longtail_class_counts",
    "make_longtail_indices",
    "classes_by_count",
    "subsample_per_class",
]


def longtail_class_counts(num_per_class_max: int, num_classes: int, imbalance_factor: float) -> List[int]:
    """Exponential-profile class counts ``n_i = int(n_max * IF^(-i / (C - 1)))``, i = 0..C-1.

    Written as ``n_max * (1 / IF) ** (i / (C - 1))``, the form of the reference code (which takes
    ``1 / IF``), so the integer truncation agrees with it bit for bit.
    """
    if num_classes < 1:
        raise UserInputError(f"number of classes must be >= 1, got {num_classes}")
    if num_per_class_max < 1:
        raise UserInputError(f"images per class must be >= 1, got {num_per_class_max}")
    if not imbalance_factor >= 1:
        raise UserInputError(f"imbalance factor must be >= 1 (n_max / n_min), got {imbalance_factor}")
    if num_classes == 1:
        return [int(num_per_class_max)]
    ratio = 1.0 / float(imbalance_factor)
    return [int(num_per_class_max * ratio ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def make_longtail_indices(
    labels: Sequence[int],
    imbalance_factor: float,
    seed: int = 0,
    num_per_class_max: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> np.ndarray:
    """Indices of a long-tailed subset of a (balanced) labelled set, as the standard CIFAR-LT code.

    ``n_max`` defaults to ``len(labels) / C`` (the reference's choice; 5000 for CIFAR-10, 500 for
    CIFAR-100). For each class in natural order, that class's indices (ascending) are shuffled in
    place with one ``RandomState(seed)`` shared across classes, and the first ``n_i`` are kept.
    Indices come back grouped by class, in the order picked, as the reference stores its data.
    A class with fewer than ``n_i`` images keeps all it has.
    """
    labels_np = np.asarray(labels, dtype=np.int64)
    if labels_np.ndim != 1 or labels_np.size == 0:
        raise UserInputError("labels must be a non-empty 1-D sequence of class ids")
    if labels_np.min() < 0:
        raise UserInputError(f"class ids must be >= 0, found {int(labels_np.min())}")
    num_classes = int(num_classes if num_classes is not None else labels_np.max() + 1)
    if num_per_class_max is None:
        num_per_class_max = int(len(labels_np) / num_classes)
    counts = longtail_class_counts(num_per_class_max, num_classes, imbalance_factor)
    return subsample_per_class(labels_np, counts, seed=seed)


def classes_by_count(class_counts: Sequence[int]) -> List[int]:
    """Class ids ordered by training images, most first (ties by class id): head to tail."""
    return sorted(range(len(class_counts)), key=lambda c: (-int(class_counts[c]), c))


def subsample_per_class(labels: Sequence[int], counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """The first ``counts[c]`` of class ``c``'s indices after a seeded shuffle, classes in natural order.

    One ``RandomState(seed)`` is shared across classes (the legacy generator behind the reference
    code's ``np.random.seed`` + ``np.random.shuffle``), so the CIFAR-LT training subsets and SADE's
    test-agnostic test sets come out image for image as in the reference code.
    """
    labels_np = np.asarray(labels, dtype=np.int64)
    rng = np.random.RandomState(seed)
    picked = []
    for class_id, n_keep in enumerate(counts):
        class_indices = np.where(labels_np == class_id)[0]
        rng.shuffle(class_indices)
        picked.append(class_indices[:int(n_keep)])
    return np.concatenate(picked).astype(np.int64)


# name -> (many_threshold, few_threshold, inclusive): the two rules in use in the literature.
SHOT_RULES: Dict[str, tuple] = {
    "standard": (100, 20, False),  # many > 100, few < 20 (LDAM/RIDE/most papers)
    "ncl": (100, 20, True),  # many >= 100, few <= 20 (NCL/NCL++ code)
}


@dataclass(frozen=True)
class ShotSplit:
    """Rule that sorts classes into many/medium/few-shot by their TRAINING image count.

    ``inclusive=False`` (the standard rule): many if ``n > many_threshold``, few if
    ``n < few_threshold``. ``inclusive=True`` (NCL's code): many if ``n >= many_threshold``, few if
    ``n <= few_threshold``. Everything else is medium. The two rules differ for classes with
    exactly 100 or 20 images, so every reported result carries :meth:`describe`.
    """

    many_threshold: int = 100
    few_threshold: int = 20
    inclusive: bool = False

    def __post_init__(self) -> None:
        if self.few_threshold > self.many_threshold:
            raise UserInputError(
                f"few-shot threshold ({self.few_threshold}) must not exceed the many-shot threshold "
                f"({self.many_threshold})")

    @classmethod
    def from_rule(cls, rule: str = "standard", many_threshold: Optional[int] = None,
                  few_threshold: Optional[int] = None) -> "ShotSplit":
        """A named rule (``"standard"`` or ``"ncl"``), thresholds optionally overridden."""
        if rule not in SHOT_RULES:
            raise UserInputError(f"unknown shot-split rule {rule!r}: use one of {sorted(SHOT_RULES)}")
        many, few, inclusive = SHOT_RULES[rule]
        return cls(many if many_threshold is None else int(many_threshold),
                   few if few_threshold is None else int(few_threshold), inclusive)

    def split_of(self, count: int) -> str:
        """``"many"``, ``"medium"`` or ``"few"`` for one class with ``count`` training images."""
        if self.inclusive:
            if count >= self.many_threshold:
                return "many"
            return "few" if count <= self.few_threshold else "medium"
        if count > self.many_threshold:
            return "many"
        return "few" if count < self.few_threshold else "medium"

    def class_splits(self, class_counts: Sequence[int]) -> List[str]:
        """Each class's split, in class order."""
        return [self.split_of(int(c)) for c in class_counts]

    def split_sizes(self, class_counts: Sequence[int]) -> Dict[str, int]:
        """Number of classes in each split (e.g. 35/35/30 on CIFAR-100-LT IF 100)."""
        splits = self.class_splits(class_counts)
        return {name: splits.count(name) for name in ("many", "medium", "few")}

    def describe(self) -> str:
        """One line stating the rule, to print beside every many/medium/few figure."""
        if self.inclusive:
            return (f"many: n >= {self.many_threshold}, few: n <= {self.few_threshold}, "
                    f"medium otherwise (n = training images of the class)")
        return (f"many: n > {self.many_threshold}, few: n < {self.few_threshold}, "
                f"medium otherwise (n = training images of the class)")

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready form for results files."""
        return {**asdict(self), "description": self.describe()}

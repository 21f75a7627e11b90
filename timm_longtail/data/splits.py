"""Index selections of a labelled training set: held-out validation split, smoke-run subsets.

Model selection must never look at the test set (the references pick their "best" checkpoint by
test accuracy; we do not). ``stratified_holdout`` takes the same fraction of every class, seeded,
so the validation split is long-tailed like the training set and its *balanced* accuracy (mean of
per-class accuracies) estimates the balanced test accuracy.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserInputError

__all__ = ["stratified_holdout", "stratified_cap", "eval_cap", "LabelledSubset", "dataset_targets"]


def dataset_targets(dataset: Dataset) -> np.ndarray:
    """Integer label of every item, without decoding images."""
    for name in ("targets", "labels"):
        values = getattr(dataset, name, None)
        if values is not None:
            return np.asarray(values, dtype=np.int64)
    raise UserInputError(f"dataset {type(dataset).__name__} exposes no 'targets' list; "
                         f"cannot split it by class")


def stratified_holdout(targets: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation) with ``round(fraction · n_c)`` per class held out.

    A class keeps at least one training image; a class with one image gives none to validation.
    The choice depends only on ``seed`` and the labels, so every process and every resumed run
    holds out the same images.
    """
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for cls in np.unique(targets):
        members = np.flatnonzero(targets == cls)
        rng.shuffle(members)
        held = min(int(round(fraction * len(members))), len(members) - 1)
        val_parts.append(members[:held])
        train_parts.append(members[held:])
    train = np.sort(np.concatenate(train_parts)) if train_parts else np.zeros(0, np.int64)
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    return train, val


def stratified_cap(targets: Sequence[int], indices: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``indices``, the same share of every class (at least one each)."""
    indices = np.asarray(indices, dtype=np.int64)
    if limit >= len(indices):
        return indices
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    share = limit / len(indices)
    kept = []
    for cls in np.unique(targets[indices]):
        members = indices[targets[indices] == cls]
        rng.shuffle(members)
        kept.append(members[: max(1, int(round(share * len(members))))])
    return np.sort(np.concatenate(kept))


def eval_cap(targets: Sequence[int], limit: int) -> np.ndarray:
    """The test rows a capped evaluation uses (train.py --max-eval-samples, validate.py / analyze.py
    --num-samples): the same share of every class, drawn with a fixed seed, so that a run's final.json
    and validate.py on its checkpoint score the same images."""
    return stratified_cap(targets, np.arange(len(targets)), limit, seed=0)


class LabelledSubset(Dataset):
    """A subset that still answers ``class_counts`` / ``class_names`` / ``num_classes``.

    Class counts are recounted on the subset (the losses' priors must describe the images the
    model actually trains on); ``num_classes`` and names stay those of the full set.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = dataset_targets(dataset)[self.indices]
        self.num_classes = int(dataset.num_classes)
        self.class_names = list(dataset.class_names)
        self.class_counts = np.bincount(self.targets, minlength=self.num_classes).tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __getattr__(self, name: str) -> Any:
        # attributes the loaders may read (e.g. 'transform'); only called when normal lookup fails
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def class_count_list(counts: Any) -> list[int]:
    """Class counts as plain ints (datasets may keep them as a tensor or an array)."""
    if isinstance(counts, torch.Tensor):
        counts = counts.tolist()
    return [int(c) for c in counts]

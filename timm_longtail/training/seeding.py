"""Augmentation randomness that depends only on (seed, epoch, draw), never on workers or history.

Each draw of the sampler carries its own seed: ``EpochSeededSampler`` yields ``(draw_seed,
index)`` and ``SeededDataset`` seeds torch, numpy and ``random`` from it before transforming the
image. So the images of epoch ``e`` are the same whether the run went through epochs ``0..e-1``
or resumed at ``e``, with 0 or 16 loader workers, persistent or not: that is what makes
``--resume`` exact. The seed is per *draw*, not per image, so an image drawn twice in one epoch by
the class-balanced sampler gets two different augmentations.
"""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["draw_seed", "ShuffleSampler", "EpochSeededSampler", "SeededDataset"]

_MASK = (1 << 63) - 1


def draw_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 63-bit seed for one draw (cheap: called once per training image)."""
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + rank * 0x94D049BB133111EB) & _MASK
    return (value ^ (position * 0x2545F4914F6CDD1D)) & _MASK


class ShuffleSampler(Sampler[int]):
    """A fresh permutation every epoch, a function of (seed, epoch) only."""

    def __init__(self, num_items: int, seed: int):
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(draw_seed(self.seed, self.epoch, 0, 0))
        return iter(torch.randperm(self.num_items, generator=generator).tolist())


class EpochSeededSampler(Sampler[tuple]):
    """Wrap an index sampler: yield ``(draw_seed, index)`` and forward ``set_epoch``."""

    def __init__(self, sampler: Sampler, seed: int, rank: int = 0):
        self.sampler = sampler
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple]:
        for position, index in enumerate(self.sampler):
            yield draw_seed(self.seed, self.epoch, self.rank, position), int(index)


class SeededDataset(Dataset):
    """Seed every RNG an augmentation may use from the draw's seed, then load the item."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple) -> Any:
        seed, index = key
        torch.default_generator.manual_seed(seed)  # torchvision transforms draw from torch's CPU RNG
        random.seed(seed)  # timm's RandAugment draws from Python's
        np.random.seed(seed & 0xFFFFFFFF)
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

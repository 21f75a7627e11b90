"""Training batches from a uint8 image array held on the training device, augmented there.

The alternative to the DataLoader path for small-image sets (``--device-augment``): the images
are copied to the device once, and each step gathers its batch and applies the recipe as batched
tensor ops (:class:`~timm_longtail.data.batch_augment.BatchAugment`) in the main process. The
order of images is the same index sampler as the worker path; each batch's augmentation comes
from a generator seeded by ``draw_seed(seed, epoch, rank, step)``, so a batch depends only on
(seed, epoch, rank, step): a resumed run sees the same batches as an uninterrupted one.
With ``num_copies`` T > 1 (NCL++) every image is augmented T times, each copy with its own draw.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..data.batch_augment import BatchAugment
from .seeding import EpochSeededSampler, draw_seed

__all__ = ["DeviceBatchLoader"]


class DeviceBatchLoader:
    """Yields ``(images, targets)`` on ``device``: images ``(B, 3, S, S)`` float, normalised, or
    ``(B, T, 3, S, S)`` with ``num_copies`` T > 1 (the worker path's multi-view batch layout).

    ``images`` is the ``(N, H, W, 3)`` uint8 array of the whole set, ``rows`` the rows this run
    trains on (a held-out split or a cap leaves some out) and ``sampler`` an index sampler over
    ``rows`` (positions, as a DataLoader's sampler over the subset would yield). The last batch
    may be smaller, as with the DataLoader (``drop_last=False``).
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int], rows: Sequence[int], sampler: Sampler,
                 batch_size: int, augment: BatchAugment, device: torch.device, seed: int, rank: int = 0,
                 num_copies: int = 1):
        rows = np.asarray(rows, dtype=np.int64)
        self.images = torch.from_numpy(np.ascontiguousarray(images[rows])).to(device)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64)[rows], device=device)
        self.sampler = EpochSeededSampler(sampler, seed=seed, rank=rank)  # set_epoch, as the runner calls it
        self.batch_size = int(batch_size)
        self.augment = augment
        self.device = device
        self.seed, self.rank = int(seed), int(rank)
        self.num_copies = int(num_copies)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(list(iter(self.sampler.sampler)), dtype=torch.long)
        for step, start in enumerate(range(0, len(order), self.batch_size)):
            index = order[start:start + self.batch_size].to(self.device)
            generator = torch.Generator().manual_seed(draw_seed(self.seed, self.sampler.epoch, self.rank, step))
            images = self.images[index]
            if self.num_copies > 1:  # rows image-major: copy t of image b is row b * T + t
                images = images.repeat_interleave(self.num_copies, dim=0)
            views = self.augment(images, generator)
            if self.num_copies > 1:
                views = views.unflatten(0, (len(index), self.num_copies))
            yield views, self.targets[index]

"""DataLoaders for long-tailed training and evaluation, with a class-balanced sampler.

RIDE's router stage and classifier re-balancing draw every class equally often; that sampler
also has to shard across processes under DDP, which ``torch``'s samplers do not combine.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import UserInputError

__all__ = ["ClassBalancedSampler", "create_loader"]


class ClassBalancedSampler(Sampler[int]):
    """Draw a class uniformly at random, then one of its images uniformly (with replacement).

    One epoch yields ``len(targets)`` indices (``num_samples`` overrides), split over
    ``num_replicas`` processes as ``rank::num_replicas``; call :meth:`set_epoch` every epoch, as
    with ``DistributedSampler``, so every process draws the same sequence and each epoch differs.
    Classes without images are never drawn.
    """

    def __init__(self, targets: Sequence[int], num_samples: Optional[int] = None, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        targets_np = np.asarray(targets, dtype=np.int64)
        if targets_np.size == 0:
            raise UserInputError("class-balanced sampling needs a non-empty dataset")
        if not 0 <= rank < num_replicas:
            raise UserInputError(f"rank {rank} outside 0..{num_replicas - 1}")
        order = np.argsort(targets_np, kind="stable")
        classes, starts, counts = np.unique(targets_np[order], return_index=True, return_counts=True)
        self._order = torch.from_numpy(order)
        self._starts = torch.from_numpy(starts)
        self._counts = torch.from_numpy(counts)
        self.classes = classes
        self.total_samples = int(num_samples or targets_np.size)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.total_samples, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        class_draw = torch.randint(len(self._counts), (self.total_samples,), generator=generator)
        within = (torch.rand(self.total_samples, generator=generator) * self._counts[class_draw]).long()
        indices = self._order[self._starts[class_draw] + within]
        return iter(indices[self.rank::self.num_replicas].tolist())


def create_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, sampler: Optional[Sampler] = None,
                  num_workers: int = 2, distributed: bool = False, class_balanced: bool = False,
                  drop_last: bool = False, pin_memory: bool = False, seed: int = 0,
                  persistent_workers: Optional[bool] = None) -> DataLoader:
    """A DataLoader over ``dataset``.

    ``class_balanced`` uses :class:`ClassBalancedSampler` on ``dataset.targets`` (sharded when
    ``distributed``); otherwise ``distributed`` uses ``DistributedSampler`` (shuffled when
    ``shuffle``). An explicit ``sampler`` wins over both. Call ``loader.sampler.set_epoch(e)``
    each epoch when the sampler has it.
    """
    if batch_size < 1:
        raise UserInputError(f"batch size must be >= 1, got {batch_size}")
    if sampler is None and (class_balanced or distributed):
        num_replicas, rank = 1, 0
        if distributed:
            if not torch.distributed.is_available() or not torch.distributed.is_initialized():
                raise UserInputError("distributed loading needs torch.distributed to be initialised first")
            num_replicas, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        if class_balanced:
            targets = getattr(dataset, "targets", None)
            if targets is None:
                raise UserInputError("class-balanced sampling needs a dataset with a 'targets' attribute")
            sampler = ClassBalancedSampler(targets, seed=seed, num_replicas=num_replicas, rank=rank)
        else:
            sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                                         seed=seed, drop_last=drop_last)
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    generator = torch.Generator().manual_seed(seed) if sampler is None and shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
        num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0, generator=generator,
    )

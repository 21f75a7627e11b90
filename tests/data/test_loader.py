"""Class-balanced sampling and the loader helper."""
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from timm_longtail.data import ClassBalancedSampler, create_loader
from timm_longtail.errors import UserInputError


def test_class_balanced_sampler_evens_out_a_long_tail():
    targets = np.array([0] * 900 + [1] * 90 + [2] * 10)
    sampler = ClassBalancedSampler(targets, num_samples=30_000, seed=0)
    drawn = targets[list(sampler)]
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.02)
    assert set(np.asarray(list(sampler))[drawn == 2]) <= set(range(990, 1000))
    assert len(set(list(sampler)) & set(range(990, 1000))) == 10  # every tail image gets drawn


def test_class_balanced_sampler_epochs_and_shards():
    targets = np.repeat(np.arange(4), [50, 20, 5, 1])
    full = ClassBalancedSampler(targets, seed=7)
    first = list(full)
    assert len(first) == len(targets) and first == list(full)
    full.set_epoch(1)
    assert list(full) != first
    full.set_epoch(0)
    shards = [ClassBalancedSampler(targets, seed=7, num_replicas=3, rank=r) for r in range(3)]
    assert sum(len(s) for s in shards) == len(targets)
    interleaved = [None] * len(targets)
    for rank, shard in enumerate(shards):
        interleaved[rank::3] = list(shard)
    assert interleaved == first
    with pytest.raises(UserInputError):
        ClassBalancedSampler(targets, num_replicas=2, rank=2)


class _Labelled(TensorDataset):
    def __init__(self, n):
        self.targets = np.arange(n) % 3
        super().__init__(torch.arange(n), torch.as_tensor(self.targets))


def test_create_loader_modes():
    dataset = _Labelled(10)
    plain = create_loader(dataset, batch_size=4, num_workers=0)
    assert [len(b[0]) for b in plain] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in plain]), torch.arange(10))
    balanced = create_loader(dataset, batch_size=5, num_workers=0, class_balanced=True)
    assert isinstance(balanced.sampler, ClassBalancedSampler)
    shuffled = create_loader(dataset, batch_size=10, shuffle=True, num_workers=0, seed=1)
    assert sorted(next(iter(shuffled))[0].tolist()) == list(range(10))
    with pytest.raises(UserInputError, match="initialised"):
        create_loader(dataset, batch_size=2, distributed=True)
    with pytest.raises(UserInputError):
        create_loader(dataset, batch_size=0)


def test_create_loader_distributed(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = create_loader(_Labelled(6), batch_size=3, num_workers=0, distributed=True, shuffle=True)
        assert isinstance(loader.sampler, DistributedSampler)
        assert sorted(i for b in loader for i in b[0].tolist()) == list(range(6))
    finally:
        torch.distributed.destroy_process_group()

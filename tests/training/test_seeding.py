"""Augmentation randomness is a function of (seed, epoch, draw): exact resume, any worker count."""
import torch
from torch.utils.data import DataLoader, Dataset

from timm_longtail.training.seeding import EpochSeededSampler, SeededDataset, ShuffleSampler


class RandomValues(Dataset):
    """Each item draws from torch's global RNG, as an augmentation would."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return torch.rand(1), index


def _epoch(sampler, epoch, workers):
    sampler.set_epoch(epoch)
    loader = DataLoader(SeededDataset(RandomValues()), batch_size=3, sampler=sampler, num_workers=workers)
    values, indices = zip(*[(v, i) for v, i in loader])
    return torch.cat(values).flatten(), torch.cat(indices)


def test_same_epoch_same_draws_whatever_the_history_and_workers():
    fresh = EpochSeededSampler(ShuffleSampler(6, seed=1), seed=1)
    _epoch(fresh, 0, 0)  # history: one epoch before
    after_history = _epoch(fresh, 1, 0)
    resumed = _epoch(EpochSeededSampler(ShuffleSampler(6, seed=1), seed=1), 1, 1)  # resumed, one worker
    assert torch.equal(after_history[0], resumed[0]) and torch.equal(after_history[1], resumed[1])
    other_epoch = _epoch(fresh, 2, 0)
    assert not torch.equal(after_history[0], other_epoch[0])


def test_an_image_drawn_twice_gets_two_augmentations():
    sampler = EpochSeededSampler([4, 4, 4], seed=0)
    values, indices = _epoch(sampler, 0, 0)
    assert indices.tolist() == [4, 4, 4] and len(set(values.tolist())) == 3

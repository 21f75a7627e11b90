"""Batches augmented on the training device: a function of (seed, epoch, step), aligned with labels."""
import numpy as np
import pytest
import torch

from timm_longtail.data import CIFAR_MEAN, CIFAR_STD
from timm_longtail.data.batch_augment import BatchAugment
from timm_longtail.training.device_loader import DeviceBatchLoader
from timm_longtail.training.seeding import ShuffleSampler


def _labelled_images(n=30):
    """Image i is filled with 8·i + 3 (never 0, the padding), its label is i mod 5."""
    images = (np.arange(n, dtype=np.uint8) * 8 + 3)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
    return images, np.arange(n) % 5


def _loader(rows=None, seed=0, recipe="ride_cifar", num_copies=1):
    images, labels = _labelled_images()
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    return DeviceBatchLoader(images, labels, rows, ShuffleSampler(len(rows), seed=seed), batch_size=8,
                             augment=BatchAugment(recipe, 32), device=torch.device("cpu"), seed=seed,
                             num_copies=num_copies)


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return list(loader)


def _image_ids(images):
    """Which source image each augmented one came from (its one non-padding value)."""
    u8 = (images * torch.tensor(CIFAR_STD)[:, None, None] + torch.tensor(CIFAR_MEAN)[:, None, None]) * 255
    values = u8.round().to(torch.int64).flatten(1).max(1).values
    return ((values - 3) // 8).tolist()


@pytest.mark.slow
def test_an_epoch_depends_only_on_seed_and_epoch():
    fresh = _loader()
    _epoch(fresh, 0)
    after_history = _epoch(fresh, 1)
    resumed = _epoch(_loader(), 1)
    assert len(after_history) == len(resumed) == len(fresh) == 4  # 30 images, batches of 8: the last has 6
    assert [t.shape[0] for _, t in resumed] == [8, 8, 8, 6]
    for (xa, ya), (xb, yb) in zip(after_history, resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = _epoch(fresh, 2)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(other, resumed))
    assert not torch.equal(_epoch(_loader(seed=1), 1)[0][0], resumed[0][0])


def test_every_row_once_per_epoch_with_its_own_label():
    rows = [0, 2, 5, 7, 11, 13, 17, 19, 23, 29]
    loader = _loader(rows=rows)
    seen = []
    for images, target in _epoch(loader, 0):
        ids = _image_ids(images)
        assert target.tolist() == [i % 5 for i in ids]
        seen.extend(ids)
    assert sorted(seen) == rows


@pytest.mark.slow
def test_copies_of_an_image_are_its_own_draws_in_the_worker_paths_layout():
    """NCL++: (B, T, 3, S, S) with row b holding T augmentations of image b (the DataLoader's
    multi-view layout), each copy its own draw, the same for a fresh loader at the same epoch."""
    batches = _epoch(_loader(num_copies=3), 1)  # ride_cifar keeps the fill value: ids readable
    assert [tuple(x.shape) for x, _ in batches] == [(8, 3, 3, 32, 32)] * 3 + [(6, 3, 3, 32, 32)]
    seen = []
    for views, target in batches:
        for copies, label in zip(views, target.tolist()):
            ids = set(_image_ids(copies))
            assert len(ids) == 1 and label == ids.pop() % 5
            assert not torch.equal(copies[0], copies[1]) and not torch.equal(copies[1], copies[2])
        seen.extend(target.tolist())
    assert len(seen) == 30
    nclpp = _epoch(_loader(recipe="nclpp_cifar", num_copies=3), 1)  # AutoAugment + Cutout per copy
    assert [t.tolist() for _, t in nclpp] == [t.tolist() for _, t in batches]
    assert all(not torch.equal(x[:, 0], x[:, 1]) for x, _ in nclpp)
    for (xa, ya), (xb, yb) in zip(nclpp, _epoch(_loader(recipe="nclpp_cifar", num_copies=3), 1)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)

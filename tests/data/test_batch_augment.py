"""The batched small-image recipes against the PIL path: same pixels per draw, same distributions."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F1

from timm_longtail.data import CIFAR_MEAN, CIFAR_STD, build_dataset, create_train_transform
from timm_longtail.data.batch_augment import BATCH_RECIPES, BatchAugment
from timm_longtail.errors import UserInputError


def _pixels(n=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _coordinate_image():
    """Red = 7·column + 1, green = 7·row + 1: a crop's offset and flip can be read off its pixels."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = np.arange(32)[None, :] * 7 + 1
    image[..., 1] = np.arange(32)[:, None] * 7 + 1
    return image


def _unnormalize(x):
    mean, std = torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None]
    return (x * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)


def _read_draw(u8):
    """(top, left, flip) of a crop of the coordinate image, from its centre pixels (never padding)."""
    red, green, red_next = int(u8[0, 16, 16]), int(u8[1, 16, 16]), int(u8[0, 16, 17])
    column, row, flip = (red - 1) // 7, (green - 1) // 7, red_next < red
    left = (column + 16 - 31) + 4 if flip else column - 16 + 4  # offset in the padded image
    return row - 16 + 4, left, flip


def test_crop_and_flip_give_the_pil_paths_pixels():
    augment = BatchAugment("ldam_cifar", 32)
    image = _pixels()[0]
    pil = F1.pad(Image.fromarray(image), 4, fill=0)
    tops, lefts = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    for flip in (False, True):
        params = dict(top=tops.flatten(), left=lefts.flatten(), flip=torch.full((81,), flip))
        batch = augment.crop_flip(torch.from_numpy(image).expand(81, 32, 32, 3), params)
        for k, (top, left) in enumerate(zip(params["top"].tolist(), params["left"].tolist())):
            expected = F1.crop(pil, top, left, 32, 32)
            expected = F1.hflip(expected) if flip else expected
            assert np.array_equal(batch[k].permute(1, 2, 0).numpy(), np.asarray(expected)), (top, left, flip)


def test_rotation_is_torchvisions_and_agrees_with_pil():
    augment = BatchAugment("ride_cifar", 32)
    images = torch.from_numpy(_pixels(40)).permute(0, 3, 1, 2)
    angles = torch.empty(40).uniform_(-15, 15, generator=torch.Generator().manual_seed(0))
    rotated = augment.rotate(images, angles)
    for image, angle, out in zip(images, angles.tolist(), rotated):
        pil = F1.rotate(Image.fromarray(image.permute(1, 2, 0).numpy()), angle,
                        interpolation=F1.InterpolationMode.NEAREST, fill=0)
        agree = (out.permute(1, 2, 0).numpy() == np.asarray(pil)).all(-1).mean()
        assert agree >= 0.99, (angle, agree)  # nearest-neighbour ties at a few boundary pixels


def test_draw_distributions_match_torchvisions_transforms():
    """Offsets uniform over 0..8 each, flips fair, angles U(-15, 15), read from the outputs of both paths."""
    n = 2700
    image = _coordinate_image()
    augment = BatchAugment("ldam_cifar", 32)
    batch = _unnormalize(augment(torch.from_numpy(image).expand(n, 32, 32, 3), torch.Generator().manual_seed(3)))
    ours = np.array([_read_draw(x) for x in batch], dtype=float)
    torch.manual_seed(3)
    pil_tf = create_train_transform("ldam_cifar")
    theirs = np.array([_read_draw(_unnormalize(pil_tf(Image.fromarray(image)))) for _ in range(n)], dtype=float)
    for draws in (ours, theirs):
        for column in (0, 1):
            freq = np.bincount(draws[:, column].astype(int), minlength=9) / n
            assert freq.shape == (9,) and np.abs(freq - 1 / 9).max() < 0.03, freq
        assert abs(draws[:, 2].mean() - 0.5) < 0.04
        assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.06  # rows and columns drawn independently
    angles = BatchAugment("ride_cifar", 32).draw(4000, torch.Generator().manual_seed(0))["angle"]
    assert -15 <= angles.min() < -14.9 and 14.9 < angles.max() <= 15
    assert abs(angles.mean()) < 0.5 and abs(angles.abs().mean() - 7.5) < 0.3


@pytest.mark.parametrize("recipe", sorted(BATCH_RECIPES))
def test_per_channel_statistics_on_real_images_match_the_pil_path(recipe):
    data = build_dataset("demo")
    images = data.images[:200]
    torch.manual_seed(0)
    pil_tf = create_train_transform(recipe)
    theirs = torch.stack([pil_tf(Image.fromarray(x)) for x in np.concatenate([images] * 4)])
    ours = BatchAugment(recipe, 32)(torch.from_numpy(np.concatenate([images] * 4)), torch.Generator().manual_seed(0))
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    for stat in (lambda x: x.mean(dim=(0, 2, 3)), lambda x: x.std(dim=(0, 2, 3))):
        assert torch.allclose(stat(ours), stat(theirs), atol=0.03), (stat(ours), stat(theirs))
    black = ((_unnormalize(ours) == 0).all(1)).float().mean(), ((_unnormalize(theirs) == 0).all(1)).float().mean()
    assert abs(black[0] - black[1]) < 0.01, black  # the share of padding / fill pixels


def test_same_seed_same_batch_and_bad_input():
    augment = BatchAugment("ride_cifar", 32)
    images = torch.from_numpy(_pixels(16))
    a, b = (augment(images, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(images, torch.Generator().manual_seed(6)))
    with pytest.raises(UserInputError, match="no batched form of the 'nclpp_cifar'"):
        BatchAugment("nclpp_cifar", 32)
    with pytest.raises(UserInputError, match="uint8"):
        augment(images.float(), torch.Generator())

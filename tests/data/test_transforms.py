"""Augmentation recipes, Cutout, multi-view stacking and model-driven eval transforms."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torchvision import transforms as T

from timm_longtail.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    TRAIN_RECIPES,
    Cutout,
    MultiViewTransform,
    create_eval_transform,
    create_train_transform,
)
from timm_longtail.errors import UserInputError


def _image(size=32, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("recipe, size", [("ride_cifar", 32), ("ldam_cifar", 32), ("nclpp_cifar", 32),
                                          ("imagenet", 224), ("inat", 224), ("nclpp_imagenet", 224)])
def test_recipes_produce_normalised_tensors(recipe, size):
    torch.manual_seed(0)
    out = create_train_transform(recipe)(_image(40))
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    assert out.min() < 0  # normalised, not in [0, 1]
    assert recipe in TRAIN_RECIPES


def test_recipes_hold_the_documented_steps():
    ride = [type(t) for t in create_train_transform("ride_cifar").transforms]
    assert ride[:3] == [T.RandomCrop, T.RandomHorizontalFlip, T.RandomRotation]
    ncl = create_train_transform("nclpp_cifar").transforms
    assert any(isinstance(t, T.AutoAugment) and t.policy == T.AutoAugmentPolicy.CIFAR10 for t in ncl)
    assert [type(t) for t in ncl].index(Cutout) < [type(t) for t in ncl].index(T.Normalize)
    names = [type(t).__name__ for t in create_train_transform("nclpp_imagenet").transforms]
    assert names.index("ColorJitter") < names.index("RandAugment")  # NCL++ order: jitter, then RandAugment


def test_ldam_cifar_is_crop_and_flip_only():
    """LDAM-DRW code: RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize; no rotation."""
    steps = create_train_transform("ldam_cifar").transforms
    assert [type(t) for t in steps] == [T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert steps[0].size == (32, 32) and steps[0].padding == 4
    assert tuple(steps[3].mean) == CIFAR_MEAN and tuple(steps[3].std) == CIFAR_STD
    assert create_train_transform("ldam_cifar", img_size=64).transforms[0].padding == 8


def test_cifar_eval_transform_normalises_with_cifar_statistics():
    image = Image.new("RGB", (32, 32), (128, 64, 255))
    out = create_eval_transform(recipe="ride_cifar")(image)
    expected = (torch.tensor([128, 64, 255]) / 255.0 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    torch.testing.assert_close(out[:, 5, 7], expected)


def test_eval_transform_from_model_cfg():
    model = timm.create_model("ride_resnet32_2e", num_classes=10)
    image = _image(32)
    out = create_eval_transform(model)(image)
    assert out.shape == (3, 32, 32)
    direct = T.Normalize(model.pretrained_cfg["mean"], model.pretrained_cfg["std"])(T.ToTensor()(image))
    torch.testing.assert_close(out, direct)  # crop_pct 1 at 32 px: the image passes unchanged
    assert create_eval_transform(model, img_size=48)(_image(64)).shape == (3, 48, 48)


def test_cutout_zeroes_one_clipped_square():
    torch.manual_seed(3)
    image = torch.ones(3, 32, 32)
    out = Cutout(16)(image)
    zero_rows = (out[0] == 0).any(dim=1).nonzero().flatten()
    zero_cols = (out[0] == 0).any(dim=0).nonzero().flatten()
    assert 8 <= len(zero_rows) <= 16 and 8 <= len(zero_cols) <= 16  # clipped at most to half at a border
    assert int((out[0] == 0).sum()) == len(zero_rows) * len(zero_cols)  # one rectangle
    assert torch.equal(out[1] == 0, out[0] == 0) and image.min() == 1  # all channels, input untouched
    with pytest.raises(UserInputError):
        Cutout(0)


def test_multi_view_stacks_independent_views():
    torch.manual_seed(0)
    views = MultiViewTransform(create_train_transform("nclpp_cifar"), 4)(_image(32))
    assert views.shape == (4, 3, 32, 32)
    assert not torch.equal(views[0], views[1])
    batch = torch.utils.data.default_collate([(views, 1), (views, 2)])
    assert batch[0].shape == (2, 4, 3, 32, 32)
    with pytest.raises(UserInputError):
        MultiViewTransform(lambda x: x, 0)


def test_unknown_recipe():
    with pytest.raises(UserInputError, match="unknown augmentation recipe"):
        create_train_transform("mixup_cifar")

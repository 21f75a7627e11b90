"""Pretrained tags: a dataset tag, or a recipe prefix before one (timm's ``a1_in1k`` style)."""
import pytest

import timm_longtail  # noqa: F401
import timm
from timm_longtail.models._cfgs import DATASET_TAGS, dataset_tag


@pytest.mark.parametrize("tag, dataset", [
    ("cifar10_lt_if100", "cifar10_lt_if100"),
    ("distill_cifar10_lt_if100", "cifar10_lt_if100"),
    ("e200c2_cifar10_lt_if100", "cifar10_lt_if100"),
    ("distill_cifar100_lt_if100", "cifar100_lt_if100"),  # not cifar10_..._if100's suffix by accident
    ("imagenet_lt", "imagenet_lt"),
])
def test_dataset_tag(tag, dataset):
    assert dataset_tag(tag) == dataset


def test_unknown_dataset_is_an_error():
    with pytest.raises(KeyError, match="names no dataset"):
        dataset_tag("distill_svhn")


@pytest.mark.parametrize("name", ["ride_resnet32_3e.distill_cifar10_lt_if100", "ride_resnet32_4e.distill_cifar10_lt_if100",
                                  "nclpp_resnet32.e200c2_cifar10_lt_if100"])
def test_recipe_tags_take_their_dataset_cfg(name):
    cfg = timm.models.get_pretrained_cfg(name)
    expected = DATASET_TAGS["cifar10_lt_if100"]
    assert cfg.num_classes == 10 and cfg.mean == expected["mean"] and cfg.input_size == expected["input_size"]

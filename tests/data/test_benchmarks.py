"""The dataset table is the one home of each dataset's facts: what reads it agrees with it."""
import pytest

from timm_longtail.data import build_dataset
from timm_longtail.data.benchmarks import BENCHMARKS, SEEDED_LONGTAIL, SMALL_IMAGE_DATASETS
from timm_longtail.data.sources import DATASET_NAMES, canonical_dataset_name
from timm_longtail.errors import UserInputError
from timm_longtail.hub.export import _benchmark_of, _tag_from
from timm_longtail.models._cfgs import DATASET_TAGS
from timm_longtail.training.assembly import default_train_transform
from timm_longtail.training.methods import METHODS


def test_every_row_is_a_dataset_the_loader_knows_by_name_and_alias():
    for name, row in BENCHMARKS.items():
        assert name in DATASET_NAMES
        for alias in (*row.aliases, *([row.title] if row.is_benchmark else [])):  # "CIFAR-100-LT" as written
            assert canonical_dataset_name(alias) == name


def test_registered_tags_carry_the_rows_classes_and_statistics():
    assert set(DATASET_TAGS) == {"cifar10_lt_if100", "cifar10_lt_if50", "cifar100_lt_if100", "cifar100_lt_if50",
                                 "imagenet_lt", "places_lt", "inat2018"}
    for tag, cfg in DATASET_TAGS.items():
        row = BENCHMARKS[tag.split("_if")[0]]
        assert cfg["num_classes"] == row.num_classes and cfg["mean"] == row.mean
        assert cfg["input_size"] == (3, row.image_size, row.image_size)
    assert DATASET_TAGS["cifar100_lt_if100"]["pool_size"] == (8, 8)  # CIFAR ResNet-32 at 32 px
    assert DATASET_TAGS["imagenet_lt"]["pool_size"] == (7, 7) and DATASET_TAGS["imagenet_lt"]["crop_pct"] == 0.875


def test_the_training_recipes_and_draws_follow_the_rows():
    assert SMALL_IMAGE_DATASETS == ("cifar10_lt", "cifar100_lt", "tiny_imagenet_lt", "demo")
    assert SEEDED_LONGTAIL == ("cifar10_lt", "cifar100_lt", "folder")
    ride = METHODS["ride"]
    assert default_train_transform(ride, "tiny_imagenet_lt") == "ride_cifar"
    assert default_train_transform(ride, "inat2018") == "inat"


@pytest.mark.parametrize("name", ["imagenet_lt", "places_lt", "inat2018", "demo"])
def test_a_fixed_split_refuses_an_imbalance_factor(name):
    with pytest.raises(UserInputError, match="fixed long tail"):
        build_dataset(name, "/nonexistent", "train", imbalance_factor=10)


def test_export_tags_come_from_the_rows():
    assert _tag_from("cifar100_lt", 50) == "cifar100_lt_if50" and _tag_from("tiny_imagenet_lt", 10.0) == \
        "tiny_imagenet_lt_if10"
    assert _tag_from("inat2018", None) == "inat2018"
    assert _benchmark_of("distill_places_lt") == "places_lt" and _benchmark_of("demo") is None
    assert _benchmark_of("ride_e1_tiny_imagenet_lt_if100.0") == "tiny_imagenet_lt_if100"

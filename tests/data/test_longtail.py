"""Long-tail construction against the real CIFAR-100 label lists, and the shot-split rules."""
import numpy as np
import pytest

from timm_longtail.data import SHOT_RULES, ShotSplit, longtail_class_counts, make_longtail_indices
from timm_longtail.errors import UserInputError


@pytest.fixture(scope="module")
def cifar100_train_labels(shared_data):
    return np.load(shared_data / "cifar100-labels" / "cifar100_labels.npz")["train_fine"].astype(np.int64)


def _reference_style_selection(labels, counts, seed):
    """The published recipe written the way its code does it: global np.random seeded once."""
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        picked = []
        for cls, n in enumerate(counts):
            idx = np.where(labels == cls)[0]
            np.random.shuffle(idx)
            picked.append(idx[:n])
        return np.concatenate(picked)
    finally:
        np.random.set_state(saved)


def test_cifar100_counts_at_if100():
    counts = longtail_class_counts(500, 100, 100)
    assert counts[0] == 500 and counts[-1] == 5
    assert sum(counts) == 10_847
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_counts_formula_other_datasets():
    assert longtail_class_counts(5000, 10, 100) == [int(5000 * 100 ** (-i / 9)) for i in range(10)]
    assert sum(longtail_class_counts(500, 200, 100)) == 21_549
    assert longtail_class_counts(500, 100, 1) == [500] * 100
    assert longtail_class_counts(7, 1, 50) == [7]


@pytest.mark.parametrize("bad", [dict(num_per_class_max=0), dict(num_classes=0), dict(imbalance_factor=0.5)])
def test_counts_reject_bad_input(bad):
    kwargs = dict(num_per_class_max=500, num_classes=100, imbalance_factor=100)
    kwargs.update(bad)
    with pytest.raises(UserInputError):
        longtail_class_counts(**kwargs)


def test_cifar100_lt_selection_matches_reference_recipe(cifar100_train_labels):
    labels = cifar100_train_labels
    selected = make_longtail_indices(labels, 100, seed=0)
    counts = longtail_class_counts(500, 100, 100)
    assert len(selected) == 10_847
    assert len(np.unique(selected)) == len(selected)
    # grouped by class in natural order, n_i of each
    assert np.bincount(labels[selected], minlength=100).tolist() == counts
    assert np.array_equal(labels[selected], np.repeat(np.arange(100), counts))
    np.testing.assert_array_equal(selected, _reference_style_selection(labels, counts, seed=0))


def test_seed_changes_selection_not_counts(cifar100_train_labels):
    a = make_longtail_indices(cifar100_train_labels, 100, seed=0)
    b = make_longtail_indices(cifar100_train_labels, 100, seed=1)
    assert not np.array_equal(a, b)
    assert np.array_equal(np.bincount(cifar100_train_labels[a]), np.bincount(cifar100_train_labels[b]))


def test_cifar100_lt_shot_split_sizes(cifar100_train_labels):
    selected = make_longtail_indices(cifar100_train_labels, 100)
    counts = np.bincount(cifar100_train_labels[selected]).tolist()
    assert ShotSplit().split_sizes(counts) == {"many": 35, "medium": 35, "few": 30}
    assert sum(ShotSplit.from_rule("ncl").split_sizes(counts).values()) == 100


def test_standard_and_ncl_rules_differ_at_the_boundaries():
    counts = [101, 100, 99, 21, 20, 19]
    assert ShotSplit().class_splits(counts) == ["many", "medium", "medium", "medium", "medium", "few"]
    assert ShotSplit.from_rule("ncl").class_splits(counts) == ["many", "many", "medium", "medium", "few", "few"]
    assert set(SHOT_RULES) == {"standard", "ncl"}


def test_shot_split_describe_and_dict():
    split = ShotSplit.from_rule("standard", many_threshold=50)
    assert "n > 50" in split.describe() and "n < 20" in split.describe()
    as_dict = split.to_dict()
    assert as_dict["many_threshold"] == 50 and as_dict["few_threshold"] == 20 and as_dict["inclusive"] is False
    assert "n >= 100" in ShotSplit.from_rule("ncl").describe()


def test_shot_split_rejects_bad_rules():
    with pytest.raises(UserInputError, match="unknown shot-split rule"):
        ShotSplit.from_rule("loose")
    with pytest.raises(UserInputError, match="must not exceed"):
        ShotSplit(many_threshold=10, few_threshold=20)


def test_unbalanced_source_keeps_what_it_has():
    labels = np.array([0] * 10 + [1] * 2)
    picked = make_longtail_indices(labels, imbalance_factor=2, num_per_class_max=10)
    assert np.bincount(labels[picked]).tolist() == [10, 2]  # class 1 wants 5 but has 2
    with pytest.raises(UserInputError):
        make_longtail_indices([], 10)

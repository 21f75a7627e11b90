"""Held-out validation split and smoke-run subsets."""
import numpy as np

from timm_longtail.data.splits import stratified_cap, stratified_holdout

TARGETS = np.repeat(np.arange(5), [100, 40, 10, 2, 1])


def test_holdout_is_stratified_disjoint_and_seeded():
    train, val = stratified_holdout(TARGETS, 0.2, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(TARGETS)
    assert np.bincount(TARGETS[val], minlength=5).tolist() == [20, 8, 2, 0, 0]  # round(0.2 n), keep >= 1
    assert np.bincount(TARGETS[train], minlength=5).min() >= 1
    again_train, again_val = stratified_holdout(TARGETS, 0.2, seed=3)
    assert np.array_equal(val, again_val)
    assert not np.array_equal(val, stratified_holdout(TARGETS, 0.2, seed=4)[1])


def test_cap_keeps_every_class_in_proportion():
    kept = stratified_cap(TARGETS, np.arange(len(TARGETS)), 31, seed=0)
    counts = np.bincount(TARGETS[kept], minlength=5)
    assert counts.tolist() == [20, 8, 2, 1, 1]
    assert len(set(kept.tolist())) == len(kept)

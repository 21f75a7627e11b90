"""Each analysis on tiny logits whose answer is worked out by hand."""
import math

import numpy as np
import pytest
import torch

from timm_longtail.analysis import (
    agnostic_accuracy, agnostic_class_counts, calibration, calibration_errors, expert_disagreement, expert_usage,
    hardest_negative, hardest_negative_scores, pairwise_kl,
)
from timm_longtail.data import ShotSplit
from timm_longtail.errors import UserInputError

COUNTS = [500, 50, 5]  # class 0 many, class 1 medium, class 2 few (standard rule)
RULE = ShotSplit()


def _logits(*rows):
    return torch.tensor(rows, dtype=torch.float64).log().float()


def test_hardest_negative_is_the_largest_wrong_class_probability():
    logits = _logits([0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.45, 0.3])
    targets = torch.tensor([0, 2, 2, 1])
    scores = hardest_negative_scores(logits, targets)
    assert torch.allclose(scores, torch.tensor([0.2, 0.7, 0.3, 0.3]), atol=1e-6)
    result = hardest_negative(logits, targets, COUNTS, RULE, num_bins=4)
    splits = result["splits"]
    assert splits["all"]["n"] == 4 and splits["all"]["mean"] == pytest.approx(0.375)
    assert splits["many"]["mean"] == pytest.approx(0.2) and splits["medium"]["mean"] == pytest.approx(0.3)
    assert splits["few"]["mean"] == pytest.approx(0.5) and splits["few"]["share_above_half"] == 0.5
    assert splits["all"]["histogram"] == [1, 2, 1, 0]  # 0.2 | 0.3 0.3 | 0.7 |
    assert result["bin_edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_calibration_errors_by_hand():
    logits = _logits([0.85, 0.15], [0.85, 0.15], [0.55, 0.45], [0.45, 0.55])
    targets = torch.tensor([0, 1, 0, 1])  # right, wrong (conf 0.85); right, right (conf 0.55)
    result = calibration_errors(logits, targets, num_bins=10)
    # bin (0.8, 0.9]: conf 0.85, acc 0.5 -> gap 0.35; bin (0.5, 0.6]: conf 0.55, acc 1 -> gap 0.45
    assert result["ece"] == pytest.approx(0.5 * 0.35 + 0.5 * 0.45, abs=1e-6)
    assert result["mce"] == pytest.approx(0.45, abs=1e-6)
    assert result["nll"] == pytest.approx(-(math.log(0.85) + math.log(0.15) + 2 * math.log(0.55)) / 4, abs=1e-6)
    assert [b["count"] for b in result["bins"]] == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    split = calibration(logits, torch.tensor([0, 1, 0, 1]), [9, 500, 5], RULE, num_bins=10)["splits"]
    assert split["medium"] is None and split["few"]["n"] == 2 and split["many"]["n"] == 2  # classes 0 and 1


def test_pairwise_kl_and_top1_disagreement_by_hand():
    p, q = [0.4, 0.6], [0.9, 0.1]
    logits = torch.stack([_logits(p, [0.3, 0.7]), _logits(q, [0.2, 0.8])])  # (E=2, N=2, C=2)
    kl_pq = sum(a * math.log(a / b) for a, b in zip(p, q))
    kl_qp = sum(b * math.log(b / a) for a, b in zip(p, q))
    assert pairwise_kl(logits)[0].item() == pytest.approx((kl_pq + kl_qp) / 2, rel=1e-5)
    result = expert_disagreement(logits, torch.tensor([0, 1]), [500, 5], RULE)["splits"]
    assert result["all"]["top1_disagreement"] == 0.5  # image 0: experts say 1 and 0; image 1: both 1
    assert result["many"]["top1_disagreement"] == 1.0 and result["few"]["top1_disagreement"] == 0.0
    same = torch.stack([_logits(p), _logits(p), _logits(p)])
    assert pairwise_kl(same).abs().max() < 1e-6


def test_expert_usage_shares_and_accuracy_per_group():
    used = torch.tensor([1, 1, 2, 3, 3, 1])
    targets = torch.tensor([0, 0, 0, 2, 2, 1])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 2, 0, 1]), 3).float()  # wrong: images 1 and 4
    result = expert_usage(used, logits, targets, 3, COUNTS, RULE)
    many = result["splits"]["many"]
    assert many["share"] == pytest.approx([2 / 3, 1 / 3, 0]) and many["accuracy"] == [0.5, 1.0, None]
    assert result["splits"]["few"]["mean_experts"] == 3.0 and result["splits"]["all"]["mean_experts"] == pytest.approx(11 / 6)
    assert result["per_class"][2]["accuracy"] == [None, None, 0.5]


def test_sade_test_distributions_are_the_cifar_lt_counts_forward_and_reversed():
    counts = agnostic_class_counts(100, [500] * 10, 50, backward=False)
    assert counts == [int(100 * 0.02 ** (i / 9)) for i in range(10)]  # SADE: img_max * (1/rho)^(i/(C-1))
    assert agnostic_class_counts(100, [500] * 10, 50, backward=True) == counts[::-1]
    assert agnostic_class_counts(100, [500] * 10, 1, backward=False) == [100] * 10
    # classes ranked by training images (ties by id), not by id: class 1 is the head here
    assert agnostic_class_counts(10, [5, 50, 20], 10, backward=False) == [1, 10, 3]


def test_agnostic_accuracy_by_hand_and_balanced_split_only():
    targets = torch.tensor([0, 0, 1, 1])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 0]), 2).float()  # class 0 right, class 1 wrong
    rows = {r["name"]: r for r in agnostic_accuracy(logits, targets, [100, 10])["rows"]}
    assert rows["uniform"]["top1"] == 50.0 and rows["uniform"]["num_images"] == 4
    assert rows["forward2"]["num_images"] == 3 and rows["forward2"]["top1"] == pytest.approx(200 / 3)
    assert rows["forward2"]["expected_top1"] == pytest.approx(200 / 3)
    assert rows["backward2"]["top1"] == pytest.approx(100 / 3) and rows["backward2"]["ratio"] == 0.5
    assert list(rows) == ["forward50", "forward25", "forward10", "forward5", "forward2", "uniform",
                          "backward2", "backward5", "backward10", "backward25", "backward50"]
    with pytest.raises(UserInputError, match="balanced test split"):
        agnostic_accuracy(logits[:3], targets[:3], [100, 10])


def test_agnostic_test_sets_are_sades_images_on_cifar10(shared_data):
    """The same images as SADE's loaders (the LDAM-DRW construction with ``reverse``), seed 0."""
    from timm_longtail.data import build_dataset

    labels = np.asarray(build_dataset("cifar10_lt", shared_data / "cifar10", "test", imbalance_factor=100).targets)
    correct = torch.from_numpy(np.arange(labels.size) % 3 == 0)
    logits = torch.nn.functional.one_hot(torch.where(correct, torch.from_numpy(labels), (torch.from_numpy(labels) + 1)
                                                     % 10), 10).float()
    rows = {r["name"]: r for r in agnostic_accuracy(logits, torch.from_numpy(labels), list(range(10, 0, -1)))["rows"]}
    for name, factor, reverse in (("forward50", 0.02, False), ("backward10", 0.1, True)):
        np.random.seed(0)
        picked = []
        for c in range(10):
            n = int(1000 * factor ** (((9 - c) if reverse else c) / 9.0))
            idx = np.where(labels == c)[0]
            np.random.shuffle(idx)
            picked.append(idx[:n])
        picked = np.concatenate(picked)
        assert rows[name]["num_images"] == picked.size
        assert rows[name]["top1"] == pytest.approx(100 * correct.numpy()[picked].mean())


def test_bias_and_variance_of_three_models_by_hand():
    from timm_longtail.analysis import bias_variance, main_prediction

    predictions = torch.tensor([[0, 1, 2, 2], [0, 2, 2, 1], [1, 1, 2, 0]])
    targets = torch.tensor([0, 1, 1, 0])
    assert main_prediction(predictions, 3).tolist() == [0, 1, 2, 0]  # image 3: a three-way tie -> class 0
    result = bias_variance(predictions, targets, COUNTS, RULE)
    many, medium = result["splits"]["many"], result["splits"]["medium"]  # images 0, 3 and 1, 2
    assert (many["bias"], many["variance"], many["loss"]) == pytest.approx((0.0, 0.5, 0.5))
    assert (medium["bias"], medium["variance"], medium["loss"]) == pytest.approx((0.5, 1 / 6, 2 / 3))
    assert result["splits"]["few"]["n"] == 0 and result["num_models"] == 3
    assert result["per_class"][1] == result["splits"]["medium"]
    with pytest.raises(UserInputError, match="at least 2 models"):
        bias_variance(predictions[:1], targets, COUNTS, RULE)

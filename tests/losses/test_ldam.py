"""LDAM margins, DRW weights and the LDAM(-DRW) losses against hand-computed values."""
import math

import pytest
import torch

from timm_longtail.errors import UserInputError
from timm_longtail.losses import LDAMDRWLoss, LDAMLoss, drw_class_weights, ldam_margins


def _ce(row: list[float], y: int) -> float:
    return -row[y] + math.log(sum(math.exp(v) for v in row))


def test_margins_follow_inverse_quarter_power_with_max_half():
    margins = ldam_margins([10000, 16, 1], max_margin=0.5)
    # n^(-1/4): 0.1, 0.5, 1 -> scaled so the rarest (n = 1) gets 0.5
    assert margins.tolist() == pytest.approx([0.05, 0.25, 0.5], abs=1e-7)
    assert LDAMLoss([81, 1], max_margin=0.3).margins.tolist() == pytest.approx([0.1, 0.3], abs=1e-7)


def test_drw_weights_sum_to_class_count_and_favour_rare_classes():
    beta = 0.9999
    counts = [1000, 100, 10]
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    expected = [3 * w / sum(raw) for w in raw]
    weights = drw_class_weights(counts, beta)
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert weights.sum().item() == pytest.approx(3.0, rel=1e-6)
    assert weights[0] < weights[1] < weights[2]
    assert drw_class_weights([7, 7, 7, 7]).tolist() == pytest.approx([1, 1, 1, 1])


def test_ldam_loss_matches_hand_computation_with_and_without_weights():
    counts, scale = [10000, 16, 1], 2.0  # margins 0.05, 0.25, 0.5 -> shifts 0.1, 0.5, 1.0
    logits = [[2.0, 1.0, 0.5], [0.1, 0.2, 3.0], [1.5, -1.0, 0.0]]
    target = [1, 2, 0]
    shifted = [list(row) for row in logits]
    shifted[0][1] -= 0.5
    shifted[1][2] -= 1.0
    shifted[2][0] -= 0.1
    per_row = [_ce(row, y) for row, y in zip(shifted, target)]
    loss = LDAMLoss(counts, max_margin=0.5, scale=scale)
    got = loss(torch.tensor(logits), torch.tensor(target))
    assert got.item() == pytest.approx(sum(per_row) / 3, rel=1e-6)
    assert loss.components["ldam"] == pytest.approx(got.item())

    weight = [0.5, 1.0, 3.0]
    weighted = sum(weight[y] * v for y, v in zip(target, per_row)) / sum(weight[y] for y in target)
    got_weighted = loss(torch.tensor(logits), torch.tensor(target), weight=torch.tensor(weight))
    assert got_weighted.item() == pytest.approx(weighted, rel=1e-6)


def test_ldam_drw_sums_experts_and_switches_weights():
    counts = [50, 5, 2]
    loss = LDAMDRWLoss(counts, max_margin=0.5, scale=30.0)
    single = LDAMLoss(counts, max_margin=0.5, scale=30.0)
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3) * 5
    target = torch.tensor([0, 1, 2, 1])
    plain = single(logits[0], target) + single(logits[1], target)
    assert loss(logits, target).item() == pytest.approx(plain.item(), rel=1e-6)

    loss.set_reweighting(True)
    w = drw_class_weights(counts)
    reweighted = single(logits[0], target, w) + single(logits[1], target, w)
    assert loss.reweighting_enabled
    assert loss(logits, target).item() == pytest.approx(reweighted.item(), rel=1e-6)
    assert reweighted.item() != pytest.approx(plain.item(), rel=1e-3)

    restored = LDAMDRWLoss(counts)
    restored.load_state_dict(loss.state_dict())
    assert restored.reweighting_enabled


@pytest.mark.parametrize("counts", [[10, 0, 3], [[1, 2], [3, 4]], [5]])
def test_bad_class_counts_give_one_clear_error(counts):
    with pytest.raises(UserInputError, match="class_counts"):
        LDAMLoss(counts)


def test_wrong_class_count_in_logits_is_a_user_error():
    with pytest.raises(UserInputError, match="class count"):
        LDAMLoss([3, 2, 1])(torch.zeros(2, 4), torch.tensor([0, 1]))

"""Balanced Softmax CE against the balanced-probability formula of NCL++ eq. 2."""
import math

import pytest
import torch
import torch.nn.functional as F

from timm_longtail.errors import UserInputError
from timm_longtail.losses import BalancedSoftmaxCE


def test_bsce_is_minus_log_balanced_probability_by_hand():
    counts = [100, 20, 4, 1]
    logits = [[0.5, 1.0, -0.5, 2.0], [1.0, 0.0, 0.0, 0.0]]
    target = [3, 1]
    expected = 0.0
    for row, y in zip(logits, target):
        numerators = [n * math.exp(z) for n, z in zip(counts, row)]
        expected += -math.log(numerators[y] / sum(numerators))
    expected /= len(target)
    loss = BalancedSoftmaxCE(counts)
    got = loss(torch.tensor(logits), torch.tensor(target))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert loss.components == {"bsce": pytest.approx(expected, rel=1e-6)}


def test_bsce_equals_ce_on_logits_plus_log_counts():
    counts = torch.tensor([30.0, 9.0, 2.0])
    torch.manual_seed(1)
    logits = torch.randn(4, 3)
    target = torch.tensor([0, 2, 1, 2])
    expected = F.cross_entropy(logits + counts.log(), target)
    assert BalancedSoftmaxCE(counts.tolist())(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_bsce_with_equal_counts_is_plain_ce():
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    target = torch.tensor([2])
    plain = F.cross_entropy(logits, target).item()
    assert BalancedSoftmaxCE([5, 5, 5])(logits, target).item() == pytest.approx(plain, rel=1e-6)
    assert BalancedSoftmaxCE([50, 5, 5])(logits, target).item() > plain  # a head class absorbs mass


def test_bsce_rejects_mismatched_class_count():
    with pytest.raises(UserInputError, match="class count"):
        BalancedSoftmaxCE([3, 2, 1])(torch.zeros(2, 5), torch.tensor([0, 1]))

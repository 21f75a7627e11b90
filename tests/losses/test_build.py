"""build_loss: one calling convention for every method, re-weighting switch, clear errors."""
import math

import pytest
import torch

from timm_longtail.errors import UserInputError
from timm_longtail.losses import LOSS_METHODS, NCLPPLoss, RIDELoss, build_loss

COUNTS = [30, 10, 3, 1]


@pytest.mark.parametrize("method", LOSS_METHODS)
def test_every_method_takes_expert_logits_and_has_a_reweighting_switch(method):
    loss = build_loss(method, COUNTS, num_experts=2, num_copies=2)
    z = torch.randn(2, 6, 4, requires_grad=True)
    value = loss(z, torch.tensor([0, 1, 3, 0, 1, 3]))
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert all(z.grad[e].abs().sum() > 0 for e in range(2))
    assert sum(loss.components.values()) == pytest.approx(value.item(), rel=1e-5)
    assert loss.has_reweighting == (method in ("ldam_drw", "ride"))
    loss.set_reweighting(True)  # callable on every loss; a no-op where meaningless
    if loss.has_reweighting:
        assert loss.state_dict()["reweighting"].item() is True


def test_ce_and_bsce_sum_the_experts_by_hand():
    z = [[[1.0, 0.0, 0.0, 2.0]], [[0.0, 3.0, 0.0, 0.0]]]  # E = 2, N = 1
    y = 3
    expected_ce = sum(-row[0][y] + math.log(sum(math.exp(v) for v in row[0])) for row in z)
    logn = [math.log(n) for n in COUNTS]
    expected_bsce = sum(
        -(row[0][y] + logn[y]) + math.log(sum(math.exp(v + a) for v, a in zip(row[0], logn))) for row in z)
    logits = torch.tensor(z)
    assert build_loss("ce", COUNTS)(logits, torch.tensor([y])).item() == pytest.approx(expected_ce, rel=1e-6)
    assert build_loss("bsce", COUNTS)(logits, torch.tensor([y])).item() == pytest.approx(expected_bsce, rel=1e-6)


def test_options_reach_the_loss():
    ride = build_loss("ride", COUNTS, num_experts=3, diversity_factor=-0.2, reweight_factor=0.02)
    assert isinstance(ride, RIDELoss) and ride.diversity_factor == -0.2
    nclpp = build_loss("nclpp", list(range(1, 101)), num_experts=2, num_copies=4, hard_ratio=0.3,
                       renormalize_hard=False)
    assert isinstance(nclpp, NCLPPLoss)
    assert (nclpp.num_experts, nclpp.num_copies, nclpp.num_hard, nclpp.renormalize_hard) == (2, 4, 30, False)


def test_unknown_method_and_option_name_the_valid_ones():
    with pytest.raises(UserInputError, match="ce, bsce, ldam_drw, ride, nclpp"):
        build_loss("focal", COUNTS)
    with pytest.raises(UserInputError, match="valid: max_margin, scale, drw_beta"):
        build_loss("ldam_drw", COUNTS, margin=0.3)
    with pytest.raises(UserInputError, match="valid: none"):
        build_loss("ce", COUNTS, label_smoothing=0.1)
    with pytest.raises(UserInputError, match="class_counts"):
        build_loss("bsce", [5, 0, 1])

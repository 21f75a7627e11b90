"""RIDE losses (individual + diversity, router, distillation) against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from timm_longtail.errors import UserInputError
from timm_longtail.losses import (DistillationLoss, RIDELoss, RouterLoss, diversity_temperatures,
                                  router_targets)

COUNTS = [60, 30, 10]  # p = 0.6, 0.3, 0.1


def _log_softmax(v: np.ndarray) -> np.ndarray:
    v = v - v.max(axis=-1, keepdims=True)
    return v - np.log(np.exp(v).sum(axis=-1, keepdims=True))


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Batch-mean KL(softmax(p) || softmax(q)) over rows."""
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


def _ride_by_hand(z: np.ndarray, y: np.ndarray, factor: float, reweight: bool,
                  rf: float = 0.05, scale: float = 30.0) -> tuple[float, float]:
    """Individual (LDAM with optional DRW) summed over experts, and the diversity term."""
    n = np.array(COUNTS, dtype=np.float64)
    margins = n ** -0.25
    margins = 0.5 * margins / margins.max()
    w = (1 - 0.9999) / (1 - 0.9999 ** n)
    w = w * len(n) / w.sum() if reweight else np.ones_like(n)
    individual = 0.0
    for expert in z:
        shifted = expert.copy()
        shifted[np.arange(len(y)), y] -= scale * margins[y]
        nll = -_log_softmax(shifted)[np.arange(len(y)), y]
        individual += float((w[y] * nll).sum() / w[y].sum())
    if reweight:
        weights = len(n) * (n / n.sum()) * rf + 1 - rf
        temps = weights / weights.max()
    else:
        temps = np.ones_like(n)
    mean = z.mean(0)
    diversity = sum(factor * temps.mean() ** 2 * _kl(mean / temps, e / temps) for e in z)
    return individual, diversity


def test_temperatures_before_and_after_reweighting():
    # w = 3·p·0.05 + 0.95 = 1.04, 0.995, 0.965; T = w / 1.04
    expected = [1.0, 0.995 / 1.04, 0.965 / 1.04]
    assert diversity_temperatures(COUNTS, 0.05).tolist() == pytest.approx(expected, rel=1e-6)
    loss = RIDELoss(COUNTS)
    assert loss.current_temperatures().tolist() == [1.0, 1.0, 1.0]
    loss.set_reweighting(True)
    assert loss.current_temperatures().tolist() == pytest.approx(expected, rel=1e-6)
    assert loss.current_temperatures()[2] < loss.current_temperatures()[0]  # rare class sharper
    with pytest.raises(UserInputError, match="reweight_factor"):
        diversity_temperatures(COUNTS, 5.0)


@pytest.mark.parametrize("reweight", [False, True])
def test_ride_loss_matches_hand_computation(reweight):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 4, 3)) * 4
    y = np.array([0, 2, 1, 2])
    loss = RIDELoss(COUNTS, diversity_factor=-0.45, reweight_factor=0.05)
    loss.set_reweighting(reweight)
    got = loss(torch.tensor(z, dtype=torch.float32), torch.tensor(y))
    individual, diversity = _ride_by_hand(z, y, -0.45, reweight)
    assert loss.components["individual"] == pytest.approx(individual, rel=1e-5)
    assert loss.components["diversity"] == pytest.approx(diversity, rel=1e-4)
    assert got.item() == pytest.approx(individual + diversity, rel=1e-5)


def test_diversity_is_negative_for_differing_experts_and_zero_for_identical():
    torch.manual_seed(0)
    loss = RIDELoss(COUNTS, diversity_factor=-0.45)
    target = torch.tensor([0, 1])
    loss(torch.randn(2, 2, 3) * 3, target)
    assert loss.components["diversity"] < 0
    same = torch.randn(1, 2, 3).expand(3, 2, 3)
    loss(same, target)
    assert loss.components["diversity"] == pytest.approx(0.0, abs=1e-6)
    # A gradient step on the diversity term alone moves the experts away from their mean.
    z = torch.randn(2, 2, 3) * 0.1
    diversity_grad = _grad(RIDELoss(COUNTS, diversity_factor=-0.45), z, target) - _grad(
        RIDELoss(COUNTS, diversity_factor=0.0), z, target)
    stepped = z - 0.5 * diversity_grad

    def spread(e: torch.Tensor) -> float:
        return sum(_kl(e.mean(0).numpy(), x.numpy()) for x in e)

    assert spread(stepped) > spread(z)


def _grad(loss: RIDELoss, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    leaf = z.clone().requires_grad_()
    loss(leaf, target).backward()
    return leaf.grad


def test_collaborative_quirk_only_with_flag_and_zero_factor():
    torch.manual_seed(2)
    z = torch.randn(2, 3, 3) * 2
    y = torch.tensor([0, 1, 2])
    individual = RIDELoss(COUNTS, base_loss="ce", diversity_factor=0.0)(z, y)
    by_hand_individual = sum(
        -float(torch.log_softmax(z[e], -1)[torch.arange(3), y].mean()) for e in range(2))
    assert individual.item() == pytest.approx(by_hand_individual, rel=1e-5)

    quirk = RIDELoss(COUNTS, base_loss="ce", diversity_factor=0.0, collaborative_without_diversity=True)(z, y)
    mean_logits = z.mean(0)
    by_hand_collab = 2 * -float(torch.log_softmax(mean_logits, -1)[torch.arange(3), y].mean())
    assert quirk.item() == pytest.approx(by_hand_collab, rel=1e-5)
    assert quirk.item() != pytest.approx(individual.item(), rel=1e-3)
    # With a non-zero factor the flag changes nothing.
    a = RIDELoss(COUNTS, diversity_factor=-0.2)(z, y)
    b = RIDELoss(COUNTS, diversity_factor=-0.2, collaborative_without_diversity=True)(z, y)
    assert a.item() == pytest.approx(b.item())


def test_reweighting_switch_is_in_the_state_dict():
    loss = RIDELoss(COUNTS)
    loss.set_reweighting(True)
    state = loss.state_dict()
    assert "reweighting" in state
    resumed = RIDELoss(COUNTS)
    assert not resumed.reweighting_enabled
    resumed.load_state_dict(state)
    assert resumed.reweighting_enabled
    resumed.set_reweighting(False)
    assert not resumed.reweighting_enabled


def test_gradients_reach_every_expert():
    z = torch.randn(3, 4, 3, requires_grad=True)
    loss = RIDELoss(COUNTS)
    loss.set_reweighting(True)
    loss(z, torch.tensor([0, 1, 2, 0])).backward()
    assert all(z.grad[e].abs().sum() > 0 for e in range(3))


def test_router_targets_on_a_hand_built_case():
    # Target class 0 everywhere; per sample the three experts' logits and what the cumulative
    # ensembles 0, 0..1, 0..2 get right (R) or wrong (W).
    samples = [
        ([2, 0, 0], [0, 1, 0], [0, 2, 0]),  # R R W -> router targets 0, 0
        ([0, 1, 0], [3, 0, 0], [0, 0, 0]),  # W R R -> 1, 0
        ([0, 1, 0], [0, 1, 0], [6, 0, 0]),  # W W R -> 1, 1
        ([0, 1, 0], [0, 1, 0], [0, 1, 0]),  # W W W -> 0, 0
        ([0, 1, 0], [3, 0, 0], [0, 9, 0]),  # W R W -> 1, 0
        ([1, 0, 0], [0, 3, 0], [6, 0, 0]),  # R W R -> 0, 1
    ]
    logits = torch.tensor(samples, dtype=torch.float32).permute(1, 0, 2)  # (E=3, B=6, C=3)
    target = torch.zeros(6, dtype=torch.long)
    expected = [[0, 1, 1, 0, 1, 0], [0, 0, 1, 0, 0, 1]]
    assert router_targets(logits, target).tolist() == expected


def test_router_loss_is_weighted_bce_by_hand():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [3.0, 0.0]]])  # (E=2, B=2, C=2)
    target = torch.tensor([0, 0])  # sample 1: expert 0 wrong, mean of 0..1 right -> y_on = 1
    router = torch.tensor([[0.5, -1.0]])
    sig = lambda r: 1 / (1 + math.exp(-r))  # noqa: E731
    expected = (-math.log(1 - sig(0.5)) - 100 * math.log(sig(-1.0))) / 2
    loss = RouterLoss(pos_weight=100.0)
    assert loss(router, logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert loss.components["router_positive_rate"] == pytest.approx(0.5)
    with pytest.raises(UserInputError, match="router logits"):
        loss(torch.zeros(2, 2), logits, target)


def test_distillation_zero_when_student_equals_teacher_and_by_hand_otherwise():
    teacher = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    for on in ("experts", "mean"):
        assert DistillationLoss(on=on)(teacher.expand(3, 2, 3), teacher).item() == pytest.approx(0, abs=1e-6)

    student = np.array([[[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], [[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
    t = 1.5
    expected_experts = t * t * sum(_kl(teacher.numpy() / t, s / t) for s in student)
    expected_mean = t * t * _kl(teacher.numpy() / t, student.mean(0) / t)
    s = torch.tensor(student, dtype=torch.float32, requires_grad=True)
    teacher_leaf = teacher.clone().requires_grad_()
    experts_loss = DistillationLoss(temperature=t, factor=1.0)(s, teacher_leaf)
    assert experts_loss.item() == pytest.approx(expected_experts, rel=1e-5)
    assert DistillationLoss(temperature=t, on="mean")(s, teacher).item() == pytest.approx(expected_mean, rel=1e-5)
    assert DistillationLoss(temperature=t, factor=0.5)(s, teacher).item() == pytest.approx(
        0.5 * expected_experts, rel=1e-5)
    experts_loss.backward()
    assert teacher_leaf.grad is None  # the teacher is not trained
    assert all(s.grad[e].abs().sum() > 0 for e in range(2))


def test_reference_distillation_is_the_mean_kl_repeated_once_per_expert():
    """``on="reference"``: KL on the mean logits; the objective enters E times (``repeats``)."""
    teacher = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    student = np.array([[[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], [[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
                        [[0.5, 0.5, 0.0], [0.0, 2.0, 0.0]]])
    t = 1.5
    expected = t * t * _kl(teacher.numpy() / t, student.mean(0) / t)
    reference = DistillationLoss(temperature=t, on="reference")
    assert reference(torch.tensor(student, dtype=torch.float32), teacher).item() == pytest.approx(expected, rel=1e-5)
    assert reference.repeats(3) == 3 and reference.repeats(4) == 4
    assert DistillationLoss(on="mean").repeats(3) == 1 and DistillationLoss(on="experts").repeats(3) == 1


def test_bad_options_are_user_errors():
    with pytest.raises(UserInputError, match="base_loss"):
        RIDELoss(COUNTS, base_loss="focal")
    with pytest.raises(UserInputError, match="experts, mean"):
        DistillationLoss(on="teacher")
    with pytest.raises(UserInputError, match="at least 2 experts"):
        RouterLoss()(torch.zeros(0, 2), torch.zeros(1, 2, 3), torch.zeros(2, dtype=torch.long))

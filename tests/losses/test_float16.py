"""Every loss under float16 autocast (how a CUDA ``--amp`` run calls them), checked on the CPU where
torch has float16 autocast there: logits arrive as float16, as a model's last layer gives them, at
magnitudes where float16 arithmetic (``exp`` of 12 already overflows it) would give inf; the loss and
its gradient must stay finite and agree with the float32 loss on the same (float16-rounded) logits."""
from __future__ import annotations

import pytest
import torch

from timm_longtail.losses import LOSS_METHODS, DistillationLoss, build_loss

COUNTS = [500, 300, 150, 80, 40, 20, 10, 5]


def _cpu_float16_autocast() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float16
    except (RuntimeError, AssertionError):
        return False


pytestmark = pytest.mark.skipif(not _cpu_float16_autocast(), reason="this torch has no float16 autocast on the CPU")


def _logits(experts: int, rows: int, scale: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(experts, rows, len(COUNTS), generator=generator)).half()


def _target(rows: int) -> torch.Tensor:
    return torch.arange(rows) % len(COUNTS)


@pytest.mark.parametrize("method", LOSS_METHODS)
@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_each_method_loss_is_finite_and_float32_exact_under_float16_autocast(method, scale):
    experts, copies, rows = 3, 2 if method == "nclpp" else 1, 16
    loss_fn = build_loss(method, COUNTS, num_experts=experts, num_copies=copies)
    if loss_fn.has_reweighting:
        loss_fn.set_reweighting(True)
    half = _logits(experts, rows * copies, scale).requires_grad_()
    target = _target(rows).repeat(copies)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = loss_fn(half, target)
    loss.backward()
    reference = loss_fn(half.detach().float(), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(half.grad).all()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("on", ["experts", "mean", "reference"])
def test_distillation_is_finite_and_float32_exact_under_float16_autocast(on):
    student = _logits(3, 16, 40.0).requires_grad_()
    teacher = _logits(1, 16, 40.0, seed=1)[0]
    loss_fn = DistillationLoss(temperature=1.5, on=on)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = loss_fn(student, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert loss.item() == pytest.approx(loss_fn(student.detach().float(), teacher.float()).item(), rel=1e-5)

"""LDAM (label-distribution-aware margin) loss and DRW (deferred re-weighting) class weights."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserInputError
from ._common import LossModule, as_class_counts, check_expert_logits, check_logits

__all__ = ["drw_class_weights", "ldam_margins", "DRWLoss", "LDAMLoss", "LDAMDRWLoss"]


def drw_class_weights(class_counts: Sequence[int] | Tensor, beta: float = 0.9999) -> Tensor:
    """Class-balanced "effective number" weights used by DRW, normalised to sum to C.

    ``w_c = (1 - β) / (1 - β^{n_c})``, then ``w ← C · w / Σ_c w``. Rare classes get larger
    weights; with β → 0 every weight tends to 1 (no re-weighting).
    """
    if not 0.0 <= beta < 1.0:
        raise UserInputError(f"drw beta must be in [0, 1), got {beta}")
    counts = as_class_counts(class_counts)
    effective_number = 1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)
    weights = (1.0 - beta) / effective_number
    return (weights * counts.numel() / weights.sum()).float()


def ldam_margins(class_counts: Sequence[int] | Tensor, max_margin: float = 0.5) -> Tensor:
    """Per-class margins ``m_c ∝ n_c^{-1/4}``, scaled so the rarest class gets ``max_margin``."""
    if max_margin < 0:
        raise UserInputError(f"max_margin must be >= 0, got {max_margin}")
    margins = as_class_counts(class_counts).pow(-0.25)
    return (margins * (max_margin / margins.max())).float()


class LDAMLoss(LossModule):
    """Label-distribution-aware margin loss (Cao et al., 2019), on already-scaled logits.

    ``L(z, y) = -log [ e^{z_y - s·m_y} / ( e^{z_y - s·m_y} + Σ_{j≠y} e^{z_j} ) ]`` with
    ``m_c = C_m · n_c^{-1/4}`` (``max_c m_c = max_margin``). The logits ``z`` are expected to be
    ``s · cos θ`` already (RIDE's cosine head multiplies by s = 30), so the margin is subtracted
    as ``s·m_y``; use ``scale=1`` for a plain linear head. ``weight`` (C,) turns the mean into the
    class-weighted mean ``Σ_b w_{y_b} L_b / Σ_b w_{y_b}`` (DRW), as ``F.cross_entropy`` does.

    Buffers: ``margins`` (C,).
    """

    def __init__(self, class_counts: Sequence[int] | Tensor, max_margin: float = 0.5,
                 scale: float = 30.0) -> None:
        super().__init__()
        if scale <= 0:
            raise UserInputError(f"LDAM scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.max_margin = float(max_margin)
        self.register_buffer("margins", ldam_margins(class_counts, max_margin))

    @property
    def num_classes(self) -> int:
        return self.margins.numel()

    def margin_logits(self, logits: Tensor, target: Tensor) -> Tensor:
        """``z`` with ``s·m_y`` subtracted from the target logit of every row."""
        shift = self.scale * self.margins[target]
        return logits - F.one_hot(target, self.num_classes).to(logits.dtype) * shift[:, None]

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        check_logits(logits, target, self.num_classes, "LDAMLoss")
        loss = F.cross_entropy(self.margin_logits(logits.float(), target), target, weight=weight)
        self._record(ldam=loss)
        return loss


class DRWLoss(LossModule):
    """Base of the losses with deferred re-weighting (Cao et al. 2019): class weights 1 until the
    re-weighting epoch, then ``drw_class_weights(n, β)``; ``set_reweighting`` is the switch.

    Buffers: ``drw_weights`` (C,), ``reweighting`` (bool scalar, saved in the state dict so a
    resumed run keeps the switch).
    """

    has_reweighting = True

    def __init__(self, class_counts: Sequence[int] | Tensor, drw_beta: float = 0.9999) -> None:
        super().__init__()
        self.register_buffer("drw_weights", drw_class_weights(class_counts, drw_beta))
        self.register_buffer("reweighting", torch.tensor(False))

    def set_reweighting(self, enabled: bool) -> None:
        self.reweighting.fill_(bool(enabled))

    @property
    def reweighting_enabled(self) -> bool:
        return bool(self.reweighting)

    def current_class_weights(self) -> Tensor:
        """DRW weights when re-weighting is on, else ones (no host sync: a tensor ``where``)."""
        return torch.where(self.reweighting, self.drw_weights, torch.ones_like(self.drw_weights))


class LDAMDRWLoss(DRWLoss):
    """LDAM-DRW baseline on (E, N, C) expert logits: ``Σ_e L_LDAM(z^e, y; w)``.

    ``w`` is 1 before the re-weighting epoch and the DRW weights ``drw_class_weights(n, β)``
    after it (``set_reweighting(True)``). Usually E = 1 (a plain network); with several experts
    each is trained on its own and the losses are summed, like RIDE's individual loss.

    Buffers: those of ``DRWLoss`` and the LDAM margins.
    """

    def __init__(self, class_counts: Sequence[int] | Tensor, max_margin: float = 0.5,
                 scale: float = 30.0, drw_beta: float = 0.9999) -> None:
        super().__init__(class_counts, drw_beta)
        self.ldam = LDAMLoss(class_counts, max_margin=max_margin, scale=scale)

    def forward(self, expert_logits: Tensor, target: Tensor) -> Tensor:
        check_expert_logits(expert_logits, target, self.ldam.num_classes, "LDAMDRWLoss")
        num_experts = expert_logits.shape[0]
        weight = self.current_class_weights()
        # Every expert sees the same targets, so the weighted-mean denominators are equal and the
        # sum over experts is E times the weighted mean over all E·N rows.
        rows = expert_logits.float().reshape(-1, expert_logits.shape[-1])
        loss = num_experts * F.cross_entropy(
            self.ldam.margin_logits(rows, target.repeat(num_experts)), target.repeat(num_experts),
            weight=weight)
        self._record(ldam=loss)
        return loss

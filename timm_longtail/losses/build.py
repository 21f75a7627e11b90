"""One entry point from a method name to its loss, with one calling convention for all.

Every loss built here is called as ``loss(expert_logits (E, N, C), target (N,)) -> scalar`` and
has ``components``, ``has_reweighting`` and ``set_reweighting(enabled)`` (a no-op where the
method has no re-weighting stage), so the training loop needs no per-method branches.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..errors import UserInputError
from ._common import LossModule, as_class_counts, check_expert_logits
from .ldam import LDAMDRWLoss
from .nclpp import NCLPPLoss
from .ride import RIDELoss

__all__ = ["LOSS_METHODS", "LOSS_OPTIONS", "ExpertSumCE", "build_loss"]


class ExpertSumCE(LossModule):
    """Baseline on (E, N, C) expert logits: ``Σ_e CE(z^e + a, y)``.

    ``a = 0`` for plain cross-entropy, ``a = log n`` for Balanced Softmax (``balanced=True``,
    per expert the same as ``BalancedSoftmaxCE``).
    Usually E = 1; with several experts each is trained on its own logits.
    """

    def __init__(self, class_counts: Sequence[int] | Tensor, balanced: bool = False) -> None:
        super().__init__()
        counts = as_class_counts(class_counts)
        self.balanced = bool(balanced)
        self.name = "bsce" if balanced else "ce"
        self.register_buffer("log_counts", counts.log().float() if balanced else counts.float().zero_())

    def forward(self, expert_logits: Tensor, target: Tensor) -> Tensor:
        check_expert_logits(expert_logits, target, self.log_counts.numel(), f"{self.name} loss")
        experts, _, classes = expert_logits.shape
        rows = (expert_logits.float() + self.log_counts).reshape(-1, classes)
        loss = experts * F.cross_entropy(rows, target.repeat(experts))  # = Σ_e of per-expert means
        self._record(**{self.name: loss})
        return loss


LOSS_OPTIONS: dict[str, tuple[str, ...]] = {
    "ce": (),
    "bsce": (),
    "ldam_drw": ("max_margin", "scale", "drw_beta"),
    "ride": ("base_loss", "diversity_factor", "reweight_factor", "base_temperature", "drw_beta",
             "collaborative_without_diversity", "max_margin", "scale"),
    "nclpp": ("hard_ratio", "num_hard", "inter_weight", "intra_weight", "renormalize_hard"),
}
LOSS_METHODS: tuple[str, ...] = tuple(LOSS_OPTIONS)


def build_loss(method: str, class_counts: Sequence[int] | Tensor, num_experts: int = 1,
               num_copies: int = 1, **options: Any) -> LossModule:
    """Build the training loss of ``method`` (one of ``LOSS_METHODS``).

    ``num_experts`` and ``num_copies`` only matter to ``nclpp`` (its inter-expert and
    intra-copy terms, which check them); the other losses treat every row as a sample and every expert alike.
    ``options`` are the method's keyword arguments (``LOSS_OPTIONS[method]``); anything else is a
    ``UserInputError`` naming the valid ones.
    """
    key = str(method).strip().lower()
    if key not in LOSS_OPTIONS:
        raise UserInputError(f"unknown loss method '{method}' (choose from {', '.join(LOSS_METHODS)})")
    unknown = sorted(set(options) - set(LOSS_OPTIONS[key]))
    if unknown:
        valid = ", ".join(LOSS_OPTIONS[key]) or "none"
        raise UserInputError(f"loss '{key}' does not take option(s) {', '.join(unknown)} (valid: {valid})")
    if key in ("ce", "bsce"):
        return ExpertSumCE(class_counts, balanced=key == "bsce")
    if key == "ldam_drw":
        return LDAMDRWLoss(class_counts, **options)
    if key == "ride":
        return RIDELoss(class_counts, **options)
    return NCLPPLoss(class_counts, num_experts=num_experts, num_copies=num_copies, **options)


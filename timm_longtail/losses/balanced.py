"""Balanced Softmax cross-entropy (Ren et al., 2020), the BSCE baseline and NCL++'s base loss."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from ._common import LossModule, as_class_counts, check_logits

__all__ = ["BalancedSoftmaxCE"]


class BalancedSoftmaxCE(LossModule):
    """Cross-entropy on balanced probabilities ``p_j = n_j e^{z_j} / Σ_l n_l e^{z_l}``.

    ``L(z, y) = -log p_y = CE(z + log n, y)``: training sees the long-tailed prior, so the raw
    logits ``z`` model the class-balanced posterior used at test time.

    Buffers: ``log_counts`` (C,) = ``log n_c``.
    """

    def __init__(self, class_counts: Sequence[int] | Tensor) -> None:
        super().__init__()
        self.register_buffer("log_counts", as_class_counts(class_counts).log().float())

    @property
    def num_classes(self) -> int:
        return self.log_counts.numel()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        check_logits(logits, target, self.num_classes, "BalancedSoftmaxCE")
        loss = F.cross_entropy(logits.float() + self.log_counts, target)
        self._record(bsce=loss)
        return loss

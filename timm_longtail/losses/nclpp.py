"""NCL++ loss: balanced individual learning, inter-/intra-expert collaborative learning, HCM, NFL.

Paper: Tan et al., "NCL++: Nested Collaborative Learning for Long-Tailed Visual Recognition"
(journal extension of NCL, CVPR 2022). Equation numbers below are the paper's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserInputError
from ._common import LossModule, as_class_counts, check_expert_logits

__all__ = ["hard_category_mask", "hard_category_count", "NCLPPLoss"]


def hard_category_count(hard_ratio: float, num_classes: int) -> int:
    """``K_hard = round(ratio · C)`` (halves round up), at least 1 (the target) and at most C."""
    if not 0.0 < hard_ratio <= 1.0:
        raise UserInputError(f"hard_ratio must be in (0, 1], got {hard_ratio}")
    return max(1, min(num_classes, math.floor(hard_ratio * num_classes + 0.5)))


def hard_category_mask(logits: Tensor, target: Tensor, num_hard: int) -> Tensor:
    """Hard category mining (eq. 7): per row, the target plus the ``num_hard - 1`` largest
    non-target logits; bool (N, C) with exactly ``num_hard`` True per row.

    The mined set is a selection, not a function to differentiate: the logits are detached.
    """
    if logits.ndim != 2 or target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise UserInputError(
            f"hard_category_mask: expected logits (N, C) and targets (N,), got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}")
    num_classes = logits.shape[1]
    if not 1 <= num_hard <= num_classes:
        raise UserInputError(f"num_hard must be between 1 and the class count {num_classes}, got {num_hard}")
    scores = logits.detach().float().scatter(1, target[:, None], float("inf"))
    chosen = scores.topk(num_hard, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, chosen, True)


def _pairwise_kl(log_probs: Tensor, mask: Tensor | None = None) -> Tensor:
    """``2/(K(K-1)) Σ_k Σ_{q≠k} mean_rows Σ_{c∈H} p_{k,c} (log p_{k,c} - log p_{q,c})``.

    ``log_probs`` is (K, *rows, C) with the K members to compare on the first dim. ``mask``
    (broadcastable to rows × C) restricts the class sum to H; entries outside it may be -inf
    (renormalised distributions) and are zeroed first so neither forward nor backward sees NaN.
    """
    members = log_probs.shape[0]
    if members < 2:
        return log_probs.new_zeros(())
    if mask is not None:
        log_probs = log_probs.masked_fill(~mask, 0.0)
        probs = log_probs.exp() * mask
    else:
        probs = log_probs.exp()
    total = log_probs.new_zeros(())
    for k in range(members):
        for q in range(members):
            if q != k:
                total = total + (probs[k] * (log_probs[k] - log_probs[q])).sum(-1).mean()
    return total * (2.0 / (members * (members - 1)))


class NCLPPLoss(LossModule):
    """NCL++ loss on (E, T·B, C) logits of K = E experts for T augmented copies of B images.

    Rows are COPY-MAJOR: row ``t·B + b`` is copy t of image b (targets repeated the same way).
    With balanced logits ``b^k = z^k + log n`` and balanced probabilities
    ``p(x; θ_k) = softmax(b^k)`` (eq. 2):

    - BIL (eq. 3): ``Σ_k -log p_y(x; θ_k)`` (mean over the T·B rows);
    - InterCL (eq. 4): ``2/(K(K-1)) Σ_k Σ_{q≠k} KL(p(x;θ_k) || p(x;θ_q))`` (mean over rows);
    - IntraCL (eq. 5-6): ``Σ_k 2/(T(T-1)) Σ_t Σ_{τ≠t} KL(p(x^t;θ_k) || p(x^τ;θ_k))`` (mean over B);
    - HCM + NFL (eq. 7-13): each term again on the hard categories H (target + top non-targets
      of expert 0's raw logits, ``K_hard = round(hard_ratio·C)``, or ``num_hard`` when given,
      which overrides the ratio; one mask for all experts) and added: ``L_x = L_x^G + L_x^P``;
    - total (eq. 14): ``L = L_bil + λ1 L_intra + λ2 L_inter`` (``intra_weight``, ``inter_weight``).

    Direction and normalisation: the sums run over ordered pairs, so both KL directions appear
    and the direction question is moot (the reference writes ``KL(p_j || p_i)`` over i ≠ j: the
    same sum). Normalisation ``2/(K(K-1))`` as eq. 4 and the NCL++ reference (the NCL
    conference code divided by K-1). Neither side of a KL is detached, as in the reference.
    The reference adds 1e-9 inside its logs; we use exact log-softmax.

    Hard categories, ``renormalize_hard=True`` (default, the paper, eq. 8): ``p*`` is the
    balanced softmax over H only. BIL^P and InterCL^P use each row's own H. IntraCL^P compares
    the copies of one image on the H mined from its copy 0 (the reference's choice as well), so
    both sides of every KL live on the same categories.

    ``renormalize_hard=False`` reproduces the reference code (Bazinga699/NCL, ``NIL_NBOD_plus``):
    BIL^P is CE on ``b·1_H`` (unselected balanced logits set to 0 and kept in the softmax), while
    InterCL^P / IntraCL^P restrict the class sum of the KL over the *full* balanced softmax to H
    (``Σ_{c∈H} p_c log(p_c/q_c)``, no renormalisation), with copy 0's H for IntraCL^P.

    Buffers: ``log_counts`` (C,). ``components``: ``bil_all``, ``bil_hard``, ``intra_all``,
    ``intra_hard``, ``inter_all``, ``inter_hard``, weights applied (they add up to the loss).
    No re-weighting switch (``has_reweighting`` False).
    """

    def __init__(self, class_counts: Sequence[int] | Tensor, num_experts: int, num_copies: int = 1,
                 hard_ratio: float = 0.3, num_hard: int | None = None, inter_weight: float = 0.6,
                 intra_weight: float = 0.6, renormalize_hard: bool = True) -> None:
        super().__init__()
        counts = as_class_counts(class_counts)
        if num_experts < 1:
            raise UserInputError(f"NCL++ num_experts must be at least 1, got {num_experts}")
        if num_copies < 1:
            raise UserInputError(f"NCL++ num_copies must be at least 1, got {num_copies}")
        num_classes = counts.numel()
        if num_hard is None:
            num_hard = hard_category_count(hard_ratio, num_classes)
        elif not 1 <= int(num_hard) <= num_classes:
            raise UserInputError(f"num_hard must be between 1 and the class count {num_classes}, got {num_hard}")
        self.num_experts = int(num_experts)
        self.num_copies = int(num_copies)
        self.num_hard = int(num_hard)
        self.inter_weight = float(inter_weight)
        self.intra_weight = float(intra_weight)
        self.renormalize_hard = bool(renormalize_hard)
        self.register_buffer("log_counts", counts.log().float())

    @property
    def num_classes(self) -> int:
        return self.log_counts.numel()

    def forward(self, expert_logits: Tensor, target: Tensor) -> Tensor:
        check_expert_logits(expert_logits, target, self.num_classes, "NCLPPLoss")
        experts, rows, classes = expert_logits.shape
        if experts != self.num_experts:
            raise UserInputError(f"NCLPPLoss was built for {self.num_experts} experts, got logits of {experts}")
        if rows % self.num_copies:
            raise UserInputError(
                f"NCLPPLoss: {rows} rows is not a multiple of num_copies={self.num_copies} "
                f"(the batch must hold every copy of every image, copy-major)")
        copies, images = self.num_copies, rows // self.num_copies

        logits = expert_logits.float()
        balanced = logits + self.log_counts
        mask = hard_category_mask(logits[0], target, self.num_hard)  # (rows, C), one for all experts
        copy0_mask = mask[:images]  # IntraCL^P: H of each image's copy 0, shared by its copies
        flat_target = target.repeat(experts)

        def per_copy(t: Tensor) -> Tensor:  # (E, T·B, C) -> (T, E, B, C): compare copies within an expert
            return t.view(experts, copies, images, classes).transpose(0, 1)

        log_p = F.log_softmax(balanced, dim=-1)
        # Every expert sees the same rows, so Σ_k mean_rows = K · mean over all K·rows.
        bil_all = experts * F.cross_entropy(balanced.reshape(-1, classes), flat_target)
        inter_all = _pairwise_kl(log_p)
        intra_all = experts * _pairwise_kl(per_copy(log_p))  # Σ_k of a mean over B = K · mean over K·B

        if self.renormalize_hard:
            hard_logits = balanced.masked_fill(~mask, float("-inf"))
            inter_hard = _pairwise_kl(F.log_softmax(hard_logits, dim=-1), mask)
            intra_logits = per_copy(balanced).masked_fill(~copy0_mask, float("-inf"))
            intra_hard = experts * _pairwise_kl(F.log_softmax(intra_logits, dim=-1), copy0_mask)
        else:
            hard_logits = balanced.masked_fill(~mask, 0.0)
            inter_hard = _pairwise_kl(log_p, mask)
            intra_hard = experts * _pairwise_kl(per_copy(log_p), copy0_mask)
        bil_hard = experts * F.cross_entropy(hard_logits.reshape(-1, classes), flat_target)

        terms = {
            "bil_all": bil_all, "bil_hard": bil_hard,
            "intra_all": self.intra_weight * intra_all, "intra_hard": self.intra_weight * intra_hard,
            "inter_all": self.inter_weight * inter_all, "inter_hard": self.inter_weight * inter_hard,
        }
        self._record(**terms)
        return sum(terms.values())

"""RIDE losses: individual + distribution-aware diversity, router (expert assignment), distillation.

Paper: Wang et al., "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts",
ICLR 2021. Where the paper and the reference code differ, the docstrings say which one is
followed and why (the code produced the published numbers).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserInputError
from ._common import LossModule, as_class_counts, check_expert_logits
from .ldam import DRWLoss, LDAMLoss

__all__ = ["RIDELoss", "RouterLoss", "DistillationLoss", "DISTILL_TARGETS", "router_targets",
           "diversity_temperatures"]

BASE_LOSSES = ("ldam", "ce")
DISTILL_TARGETS = ("experts", "mean", "reference")


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p || q) = Σ_c p_c (log p_c - log q_c)`` per row (last dim = classes)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def diversity_temperatures(class_counts: Sequence[int] | Tensor, reweight_factor: float = 0.05,
                           base_temperature: float = 1.0) -> Tensor:
    """Class-wise temperatures ``T_c`` of the diversity loss once re-weighting is on (code form).

    ``w_c = C·p_c·rf + 1 - rf`` with ``p_c = n_c / N``, ``T_c = base_T · w_c / max_c w_c``.
    The paper writes ``T_c = α(β_c + 1 - max β)`` with ``β_c = γ·n_c/mean(n) + 1 - γ``: the same
    ``w = β`` (``C·p_c = n_c / mean(n)``), normalised by division instead of by a shift; we follow
    the code. Frequent classes keep T ≈ base_T, rare ones get a lower (sharper) temperature.
    """
    counts = as_class_counts(class_counts)
    prior = counts / counts.sum()
    weights = counts.numel() * prior * reweight_factor + 1.0 - reweight_factor
    if (weights <= 0).any():
        raise UserInputError(
            f"reweight_factor {reweight_factor} is too large for these class counts: it makes a "
            f"diversity temperature non-positive (use a value in [0, 1))")
    return (base_temperature * weights / weights.max()).float()


class RIDELoss(DRWLoss):
    """RIDE stage-1 loss on (E, B, C) expert logits ``z^1..z^E``.

    ``L = Σ_e L_cls(z^e, y) + λ Σ_e mean(T)² · KL( softmax(z̄/T) || softmax(z^e/T) )``

    - **Individual loss** ``L_cls``: LDAM (``base_loss="ldam"``, margins on the s-scaled logits)
      or plain CE (``"ce"``) on each expert's own logits, summed over experts; class-weighted by
      the DRW weights once re-weighting is on. (The reference only has the LDAM form with class
      counts; ``"ce"`` with DRW weights is our generalisation.)
    - **Diversity** (reference-code form): ``z̄ = (1/E) Σ_e z^e`` without gradient, KL batch mean
      per expert, ``λ = diversity_factor`` < 0 so the KL is *maximised* (diverse experts). The
      paper's ``-1/(E-1) Σ_{j≠i} KL(p^i || p^j)`` pairwise form is replaced, as in the code, by
      the KL to the detached mean (linear instead of quadratic in E).
    - **Temperatures**: before re-weighting ``T_c = base_temperature`` for every class (1 by
      default, as the reference); after ``set_reweighting(True)`` ``T_c = diversity_temperatures(n, rf, base_T)``.
      The DRW weights and the temperatures switch together.
    - **Paper vs code, diversity factor 0**: the reference then silently trains the
      *collaborative* loss, ``L_cls`` on the mean logits ``z̄`` added once per expert
      (``E · L_cls(z̄, y)``). The paper reports that this gives correlated experts; our default
      keeps the individual loss. ``collaborative_without_diversity=True`` reproduces the code.

    Buffers: those of ``DRWLoss``, ``temperatures`` (C,) (the re-weighted ``T_c``), LDAM
    ``margins``. ``components``: ``individual`` and ``diversity`` (they add up to the loss).
    """

    def __init__(self, class_counts: Sequence[int] | Tensor, base_loss: str = "ldam",
                 diversity_factor: float = -0.45, reweight_factor: float = 0.05,
                 base_temperature: float = 1.0, drw_beta: float = 0.9999,
                 collaborative_without_diversity: bool = False, max_margin: float = 0.5,
                 scale: float = 30.0) -> None:
        super().__init__(class_counts, drw_beta)
        if base_loss not in BASE_LOSSES:
            raise UserInputError(f"RIDE base_loss must be one of {', '.join(BASE_LOSSES)}, got '{base_loss}'")
        if base_temperature <= 0:
            raise UserInputError(f"RIDE base_temperature must be > 0, got {base_temperature}")
        counts = as_class_counts(class_counts)
        self.base_loss = base_loss
        self.diversity_factor = float(diversity_factor)
        self.base_temperature = float(base_temperature)
        self.collaborative_without_diversity = bool(collaborative_without_diversity)
        # Margins are zero for "ce", which turns the margin loss into plain cross-entropy.
        self.classification = LDAMLoss(counts, max_margin=max_margin if base_loss == "ldam" else 0.0,
                                       scale=scale)
        self.register_buffer("temperatures", diversity_temperatures(counts, reweight_factor, base_temperature))

    @property
    def num_classes(self) -> int:
        return self.drw_weights.numel()

    def current_temperatures(self) -> Tensor:
        """``T_c`` when re-weighting is on (the same switch as the DRW weights), else
        ``base_temperature`` for every class."""
        return torch.where(self.reweighting, self.temperatures,
                           torch.full_like(self.temperatures, self.base_temperature))

    def _classification_loss(self, rows: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        return F.cross_entropy(self.classification.margin_logits(rows, target), target, weight=weight)

    def forward(self, expert_logits: Tensor, target: Tensor) -> Tensor:
        check_expert_logits(expert_logits, target, self.num_classes, "RIDELoss")
        logits = expert_logits.float()
        num_experts, batch, num_classes = logits.shape
        weight = self.current_class_weights()

        if self.collaborative_without_diversity and self.diversity_factor == 0:
            individual = num_experts * self._classification_loss(logits.mean(0), target, weight)
        else:
            # Same targets for every expert: the weighted-mean denominators are equal, so the sum
            # of the E per-expert losses is E times the weighted mean over all E·B rows.
            flat_target = target.repeat(num_experts)
            individual = num_experts * self._classification_loss(
                logits.reshape(-1, num_classes), flat_target, weight)

        if self.diversity_factor != 0:
            temperature = self.current_temperatures()
            with torch.no_grad():
                log_p_mean = F.log_softmax(logits.mean(0) / temperature, dim=-1)
            log_p_experts = F.log_softmax(logits / temperature, dim=-1)
            kl_per_expert = _kl_rows(log_p_mean.expand_as(log_p_experts), log_p_experts).mean(-1)
            diversity = self.diversity_factor * temperature.mean().square() * kl_per_expert.sum()
        else:
            diversity = logits.new_zeros(())

        self._record(individual=individual, diversity=diversity)
        return individual + diversity


def router_targets(expert_logits: Tensor, target: Tensor) -> Tensor:
    """Targets ``y_on`` of the E-1 routers, (E-1, B) float in {0, 1}.

    Router k decides after experts 0..k whether to call expert k+1. Its target is 1 when the
    cumulative ensemble ``(1/(k+1)) Σ_{i≤k} z^i`` is wrong AND some later cumulative ensemble
    ``0..j`` (j > k) is right, as the reference code does (the paper words it as "one of the
    remaining experts is right"). Ties in argmax go to the lowest class index.
    """
    if expert_logits.ndim != 3 or target.ndim != 1 or target.shape[0] != expert_logits.shape[1]:
        raise UserInputError(
            f"router_targets: expected expert logits (E, B, C) and targets (B,), got "
            f"{tuple(expert_logits.shape)} and {tuple(target.shape)}")
    with torch.no_grad():
        logits = expert_logits.detach().float()
        num_experts = logits.shape[0]
        experts_used = torch.arange(1, num_experts + 1, device=logits.device, dtype=logits.dtype)
        cumulative_mean = logits.cumsum(0) / experts_used[:, None, None]
        correct = cumulative_mean.argmax(-1) == target  # (E, B): ensemble 0..k right?
        right_from = correct.flip(0).cumsum(0).flip(0) > 0  # (E, B): any ensemble 0..j, j >= k, right
        return (~correct[:-1] & right_from[1:]).float()


class RouterLoss(LossModule):
    """Expert-assignment loss: weighted BCE of the E-1 routers against ``router_targets``.

    ``L = mean_{k,b} [ -ω y_on log σ(r) - (1 - y_on) log(1 - σ(r)) ]`` with ``ω = pos_weight``
    (100 in the paper and code): calling another expert when it would fix the prediction matters
    far more than the cost of calling it needlessly. ``components``: ``router`` and
    ``router_positive_rate`` (the share of targets equal to 1, for monitoring; not a loss term).
    """

    def __init__(self, pos_weight: float = 100.0) -> None:
        super().__init__()
        if pos_weight <= 0:
            raise UserInputError(f"router pos_weight must be > 0, got {pos_weight}")
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))

    def forward(self, router_logits: Tensor, expert_logits: Tensor, target: Tensor) -> Tensor:
        num_experts = expert_logits.shape[0] if expert_logits.ndim == 3 else 0
        if num_experts < 2:
            raise UserInputError("RouterLoss needs a model with at least 2 experts (E-1 routers)")
        expected = (num_experts - 1, expert_logits.shape[1])
        if tuple(router_logits.shape) != expected:
            raise UserInputError(
                f"RouterLoss: expected router logits of shape {expected}, got {tuple(router_logits.shape)}")
        targets = router_targets(expert_logits, target)
        loss = F.binary_cross_entropy_with_logits(router_logits.float(), targets, pos_weight=self.pos_weight)
        self._record(router=loss, router_positive_rate=targets.mean())
        return loss


class DistillationLoss(LossModule):
    """Self-distillation from a many-expert RIDE teacher: ``factor · T² · KL(q_T || p_T)``.

    ``q_T = softmax(z_teacher / T)`` (teacher ensemble logits, detached: the teacher is not
    trained), ``p_T = softmax(z_student / T)``, KL batch mean. Three modes (``on``):

    - ``"experts"`` (default, the paper): one KL per student expert, summed over experts; the
      objective is ``L_RIDE + Σ_e factor·T²·KL(q_T || p_T(z^e))``.
    - ``"mean"``: one KL on the student's mean logits ``z̄``, added once:
      ``L_RIDE + factor·T²·KL(q_T || p_T(z̄))``. Not the reference objective (E times smaller).
    - ``"reference"`` (the RIDE code, ``RIDELossWithDistill``): the KL on ``z̄``, and the sum
      ``(L_RIDE + factor·T²·KL(q_T || p_T(z̄)))`` added once per student expert, i.e.
      ``E · (L_RIDE + factor·T²·KL(q_T || p_T(z̄)))`` — E times the ``"mean"`` objective, which
      under SGD is E times the learning rate against an unchanged weight decay.

    ``forward`` returns the distillation term of one repetition; :meth:`repeats` says how many
    times the objective ``(method loss + distillation)`` is added (E for ``"reference"``, else 1);
    the training task (``training.tasks.ExpertsObjective``) applies it.
    """

    def __init__(self, temperature: float = 1.5, factor: float = 1.0, on: str = "experts") -> None:
        super().__init__()
        if on not in DISTILL_TARGETS:
            raise UserInputError(f"distillation 'on' must be one of {', '.join(DISTILL_TARGETS)}, got '{on}'")
        if temperature <= 0:
            raise UserInputError(f"distillation temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.factor = float(factor)
        self.on = on

    def repeats(self, num_experts: int) -> int:
        """How many times ``(method loss + distillation)`` enters the objective: E in ``"reference"``."""
        return int(num_experts) if self.on == "reference" else 1

    def forward(self, student_expert_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        if (student_expert_logits.ndim != 3 or teacher_logits.ndim != 2
                or student_expert_logits.shape[1:] != teacher_logits.shape):
            raise UserInputError(
                f"DistillationLoss: expected student logits (E, B, C) and teacher logits (B, C), got "
                f"{tuple(student_expert_logits.shape)} and {tuple(teacher_logits.shape)}")
        t = self.temperature
        student = student_expert_logits.float()
        if self.on != "experts":
            student = student.mean(0, keepdim=True)
        log_q_teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
        log_p_student = F.log_softmax(student / t, dim=-1)
        kl = _kl_rows(log_q_teacher.expand_as(log_p_student), log_p_student).mean(-1).sum()
        loss = self.factor * t * t * kl
        self._record(distill=loss)
        return loss

"""Pieces every loss shares: class-count checking, shape checking, logging of loss terms."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserInputError

__all__ = ["LossModule", "as_class_counts", "check_logits", "check_expert_logits"]


def as_class_counts(class_counts: Sequence[int] | Tensor) -> Tensor:
    """Return the training count of every class as a float64 vector, or explain what is wrong.

    Every loss here divides by or takes the log of ``n_c``, so a class with no training image
    is a user error (the class list and the data disagree), not something to paper over.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
    if counts.ndim != 1 or counts.numel() < 2:
        raise UserInputError(
            f"class_counts must be a flat list with one count per class (at least 2 classes), "
            f"got shape {tuple(counts.shape)}")
    if not torch.isfinite(counts).all() or (counts <= 0).any():
        bad = [i for i, n in enumerate(counts.tolist()) if not (n > 0 and n != float("inf"))]
        raise UserInputError(
            f"class_counts must be positive for every class; classes {bad[:10]} have "
            f"{[counts[i].item() for i in bad[:10]]} training images (drop empty classes or fix the data)")
    return counts


def check_logits(logits: Tensor, target: Tensor, num_classes: int, who: str) -> None:
    """Shapes only (no value checks: those would synchronise the GPU every step)."""
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise UserInputError(
            f"{who}: expected logits of shape (batch, {num_classes}), got {tuple(logits.shape)} "
            f"(the model's class count must equal len(class_counts))")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise UserInputError(
            f"{who}: expected targets of shape ({logits.shape[0]},), got {tuple(target.shape)}")


def check_expert_logits(expert_logits: Tensor, target: Tensor, num_classes: int, who: str) -> None:
    """``expert_logits`` is (E, N, C): every expert's logits for the same N rows."""
    if expert_logits.ndim != 3 or expert_logits.shape[2] != num_classes:
        raise UserInputError(
            f"{who}: expected expert logits of shape (experts, batch, {num_classes}), got "
            f"{tuple(expert_logits.shape)} (the model's class count must equal len(class_counts))")
    if expert_logits.shape[0] < 1:
        raise UserInputError(f"{who}: got logits of zero experts")
    if target.ndim != 1 or target.shape[0] != expert_logits.shape[1]:
        raise UserInputError(
            f"{who}: expected targets of shape ({expert_logits.shape[1]},), got {tuple(target.shape)}")


class LossModule(nn.Module):
    """Base of every loss here: a ``components`` dict for logging and a re-weighting switch.

    ``components`` maps a term's name to its contribution to the last returned loss (weights
    already applied, so the values add up to the loss). ``set_reweighting`` is the DRW switch the
    training loop flips at the re-weighting epoch; losses without one (``has_reweighting`` False)
    accept and ignore it, so the loop may call it on any loss.
    """

    has_reweighting: bool = False

    def __init__(self) -> None:
        super().__init__()
        self._terms: dict[str, Tensor] = {}

    def set_reweighting(self, enabled: bool) -> None:
        """No-op for losses without class re-weighting."""

    @property
    def components(self) -> dict[str, float]:
        """The last call's terms as floats, read with one device-to-host copy (it waits for the device)."""
        if not self._terms:
            return {}
        return dict(zip(self._terms, torch.stack(list(self._terms.values())).tolist()))

    def component_tensors(self) -> dict[str, Tensor]:
        """The last call's terms as 0-d tensors on the loss's device: the training loop sums them
        there and reads them only at log intervals, so a step waits for no device."""
        return dict(self._terms)

    def _record(self, **terms: Tensor) -> None:
        self._terms = {name: term.detach().float().reshape(()) for name, term in terms.items()}

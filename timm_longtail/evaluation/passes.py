"""The evaluation pass: a model on a long-tailed test set, in one or more forward modes.

Shared by ``validate.py`` and ``train.py``'s final evaluation, so both report the same keys:

``model, checkpoint, dataset, split, forward_mode, top1, top5, top1_many, top1_medium, top1_few,
per_class_accuracy, class_counts, class_counts_source, shot_split, split_sizes, macs_per_image,
flops_per_image, images_per_sec, experts_used_hist, experts_used_mean, num_samples, num_classes,
input_size, device, amp, eval_seconds``.

Accuracies are percentages from the ``lt_accuracy`` evaluate module. ``images_per_sec`` is model
throughput (forward passes only, data loading excluded, so modes compare fairly);
``eval_seconds`` is the whole pass. MACs come from :func:`timm_longtail.models.measure_compute`;
routed mode's cost follows the measured histogram of experts used.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from tqdm import tqdm

from .._paths import portable_paths
from ..data.longtail import ShotSplit
from ..errors import UserInputError
from ..metrics import load_lt_accuracy
from ..models import count_macs, measure_compute, parse_forward_mode
from ..precision import autocast_for

__all__ = [
    "ComputeCounter", "evaluate_model", "evaluate_mode", "resolve_forward_modes",
]

def _is_multi_expert(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_modes", None))


def resolve_forward_modes(model: nn.Module, requested: Union[str, Sequence[str]] = "ensemble") -> List[str]:
    """Expand ``"all"`` to ``model.forward_modes()``; check every requested mode is valid here.

    A comma-separated string or a list picks several modes. ``routed`` needs a trained router.
    Models that are not multi-expert nets accept only ``ensemble`` (their plain forward).
    """
    names = [requested] if isinstance(requested, str) else list(requested)
    names = [part.strip() for name in names for part in str(name).split(",") if part.strip()]
    if not names:
        raise UserInputError("no forward mode given: use 'ensemble', 'expert:<i>', 'routed' or 'all'")
    valid = model.forward_modes() if _is_multi_expert(model) else ["ensemble"]
    modes: List[str] = []
    for name in names:
        key = name.lower()
        if key == "all":
            modes.extend(m for m in valid if m not in modes)
            continue
        if _is_multi_expert(model):
            kind, index = parse_forward_mode(key, model.num_experts, model.has_router)
            key = f"expert:{index}" if kind == "expert" else kind
        if key not in valid:
            if key == "routed":
                raise UserInputError(
                    "forward mode 'routed' needs a trained router, and this model's router was never trained "
                    f"(valid modes here: {', '.join(valid)})")
            raise UserInputError(f"unknown forward mode {name!r} for this model: use one of {', '.join(valid)} or 'all'")
        if key not in modes:
            modes.append(key)
    return modes


class ComputeCounter:
    """MACs per image of each forward mode, counted once per model and input size."""

    def __init__(self, model: nn.Module, input_size: Sequence[int]):
        self.input_size = tuple(int(s) for s in input_size)
        self.profile = None
        self._plain_macs: Optional[float] = None
        if _is_multi_expert(model):
            self.profile = measure_compute(model, input_size=self.input_size)
        else:
            param = next(model.parameters())
            x = torch.zeros((1,) + self.input_size, device=param.device, dtype=param.dtype)
            was_training = model.training
            model.eval()
            with torch.no_grad():
                self._plain_macs = float(count_macs(lambda: model(x)))
            model.train(was_training)

    def macs_per_image(self, mode: str, experts_used_hist: Optional[Sequence[int]] = None) -> float:
        if self.profile is None:
            return float(self._plain_macs)
        return float(self.profile.macs_per_image(mode, experts_used_hist))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate_mode(
        model: nn.Module,
        loader: Iterable,
        mode: str = "ensemble",
        *,
        class_counts: Sequence[int],
        shot_split: Optional[ShotSplit] = None,
        device: Union[str, torch.device] = "cpu",
        amp: bool = False,
        amp_dtype: Optional[torch.dtype] = None,
        channels_last: bool = False,
        metric=None,
        progress: bool = False,
        description: str = "",
) -> Dict[str, Any]:
    """One pass over ``loader`` in one forward mode: accuracy figures, throughput, experts used."""
    device = torch.device(device)
    shot_split = shot_split or ShotSplit()
    metric = metric if metric is not None else load_lt_accuracy(keep_in_memory=True)
    multi_expert = _is_multi_expert(model)
    num_experts = int(getattr(model, "num_experts", 1))
    experts_used = torch.zeros(num_experts, dtype=torch.long)
    was_training = model.training
    model.eval()
    forward_seconds = 0.0
    seen = 0
    started = time.perf_counter()
    input_dtype = next(model.parameters()).dtype  # float32 unless trained with --model-dtype
    batches = loader
    if progress:
        batches = tqdm(loader, desc=description or mode, unit="batch", leave=False, disable=None)  # off when not a TTY
    try:
        for images, targets in batches:
            images = images.to(device, dtype=input_dtype, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            _synchronize(device)
            tic = time.perf_counter()
            with autocast_for(device, amp, amp_dtype):
                if mode == "routed":  # the one mode whose cost varies: it also says how many experts each sample used
                    logits, used = model.forward_routed(images)
                else:
                    logits = model(images, mode=mode) if multi_expert else model(images)
            _synchronize(device)
            forward_seconds += time.perf_counter() - tic
            if logits.shape[-1] != len(class_counts):
                raise UserInputError(
                    f"the model predicts {logits.shape[-1]} classes but the dataset has {len(class_counts)}")
            top_k = logits.float().topk(min(5, logits.shape[-1]), dim=-1).indices.cpu()
            metric.add_batch(predictions=top_k.tolist(), references=targets.tolist())
            if mode == "routed":
                experts_used += torch.bincount(used.cpu() - 1, minlength=num_experts)
            seen += int(targets.shape[0])
    finally:
        model.train(was_training)
    if seen == 0:
        raise UserInputError("the evaluation set is empty")
    result = metric.compute(class_counts=list(class_counts), rule="ncl" if shot_split.inclusive else "standard",
                            many_threshold=shot_split.many_threshold, few_threshold=shot_split.few_threshold)
    hist = experts_used.tolist() if mode == "routed" else None
    return dict(
        forward_mode=mode,
        top1=result["top1"], top5=result["top5"],
        top1_many=result["top1_many"], top1_medium=result["top1_medium"], top1_few=result["top1_few"],
        per_class_accuracy=result["per_class_accuracy"],
        shot_split=result["shot_split"], split_sizes=result["split_sizes"],
        experts_used_hist=hist,
        experts_used_mean=(sum((i + 1) * n for i, n in enumerate(hist)) / seen) if hist else None,
        images_per_sec=seen / forward_seconds if forward_seconds > 0 else None,
        eval_seconds=time.perf_counter() - started,
        num_samples=seen,
    )


def evaluate_model(
        model: nn.Module,
        loader: Iterable,
        modes: Union[str, Sequence[str]] = "ensemble",
        *,
        class_counts: Sequence[int],
        class_counts_source: str,
        input_size: Sequence[int],
        shot_split: Optional[ShotSplit] = None,
        device: Union[str, torch.device] = "cpu",
        amp: bool = False,
        amp_dtype: Optional[torch.dtype] = None,
        channels_last: bool = False,
        progress: bool = False,
        context: Optional[Mapping[str, Any]] = None,
) -> List[Dict[str, Any]]:
    """One result row per forward mode (``modes`` may be ``"all"``), with compute and context keys.

    ``context`` adds identifying keys to every row (model, checkpoint, dataset, split, ...); absolute
    paths in it are written relative to the checkout or as a bare name (:func:`portable_paths`).
    """
    modes = resolve_forward_modes(model, modes)
    device = torch.device(device)
    counter = ComputeCounter(model, input_size)
    metric = load_lt_accuracy(keep_in_memory=True)
    rows = []
    for mode in modes:
        row: Dict[str, Any] = portable_paths(dict(context or {}))
        row.update(evaluate_mode(model, loader, mode, class_counts=class_counts, shot_split=shot_split, device=device,
                                 amp=amp, amp_dtype=amp_dtype, channels_last=channels_last, metric=metric,
                                 progress=progress, description=mode))
        macs = counter.macs_per_image(mode, row["experts_used_hist"])
        row.update(macs_per_image=macs, flops_per_image=2.0 * macs, class_counts=[int(c) for c in class_counts],
                   class_counts_source=class_counts_source, num_classes=len(class_counts),
                   input_size=list(counter.input_size), device=str(device), amp=bool(amp))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Reporting

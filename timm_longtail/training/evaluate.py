"""Evaluation during and after training."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn


@torch.no_grad()
def _predict(model: nn.Module, loader, mode: str, device: torch.device, channels_last: bool, precision) -> tuple:
    was_training = model.training
    model.eval()
    preds, targets = [], []
    try:
        for images, target in loader:
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with precision.autocast():
                logits = model(images, mode=mode)
            preds.append(logits.float().argmax(1).cpu())
            targets.append(target)
    finally:
        model.train(was_training)
    return torch.cat(preds), torch.cat(targets)


def balanced_top1(model: nn.Module, loader, mode: str, device: torch.device, channels_last: bool, precision) -> float:
    preds, targets = _predict(model, loader, mode, device, channels_last, precision)
    accs = [(preds[targets == c] == c).float().mean().item() for c in targets.unique()]
    return 100.0 * sum(accs) / len(accs)


def evaluate_final(model, loader, class_counts: Sequence[int], modes, device, img_size, channels_last,
                   precision) -> dict[str, Any]:
    modes = modes or model.forward_modes()
    out = {}
    for mode in modes:
        if mode == "routed" and not model.router_trained:
            continue
        out[mode] = {"top1": balanced_top1(model, loader, mode, device, channels_last, precision)}
    return {"modes": out}

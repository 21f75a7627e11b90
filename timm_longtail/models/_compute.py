"""Compute accounting per forward mode, counted with ``torch.utils.flop_counter``.

torch's counter reports FLOPs of matrix products and convolutions as ``2 x multiply-accumulates``.
By default we also count the per-element work of batch norm (2 MACs per element when affine),
ReLU and pooling (1 per input element), through the counter's ``custom_mapping``: the convention
of ptflops, which produced the reference's published figures (e.g. ResNet-50 4.12 G rather than
4.09 G of convolutions alone). ``count_elementwise=False`` counts convolutions and matmuls only.
We report MACs and FLOPs (= 2 x MACs), named correctly (the RIDE reference prints MACs and calls
them FLOPs). Each part
(trunk, every expert with its head, every router) is counted once on one image; a mode's cost is
the sum of the parts it runs, and routed mode's cost follows the measured histogram of how many
experts the samples used.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UserInputError
from ._experts import MultiExpertNet, parse_forward_mode

__all__ = ["ComputeProfile", "count_macs", "measure_compute"]


def _numel(shape) -> int:
    return int(math.prod(shape)) if shape is not None else 0


def _batch_norm_flops(input_shape, weight_shape=None, *args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(input_shape) * (2 if weight_shape is not None else 1)


def _output_flops(*args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(out_shape)


def _input_flops(input_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(input_shape)


def _elementwise_mapping() -> Dict:
    aten = torch.ops.aten
    mapping = {}
    for name in ("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                 "cudnn_batch_norm", "miopen_batch_norm"):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = _batch_norm_flops
    for name in ("relu", "relu_"):
        mapping[getattr(aten, name)] = _output_flops
    for name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "_adaptive_avg_pool2d",
                 "adaptive_max_pool2d", "mean"):
        mapping[getattr(aten, name)] = _input_flops
    return mapping


def count_macs(fn: Callable[[], object], count_elementwise: bool = True) -> int:
    """Multiply-accumulates of one call of ``fn``, as torch's flop counter sees them (FLOPs / 2)."""
    mapping = _elementwise_mapping() if count_elementwise else None
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops() // 2


@dataclass
class ComputeProfile:
    """MACs per image of each part of a multi-expert model, for one input size."""

    input_size: Tuple[int, int, int]
    trunk_macs: int
    expert_macs: List[int]
    router_macs: List[int]

    def macs_per_image(self, mode: str = "ensemble", experts_used_hist: Optional[Sequence[float]] = None) -> float:
        """MACs per image in ``mode``; ``routed`` needs the histogram of experts used (1..E)."""
        kind, index = parse_forward_mode(mode, len(self.expert_macs), has_router=bool(self.router_macs))
        if kind == "ensemble":
            return float(self.trunk_macs + sum(self.expert_macs))
        if kind == "expert":
            return float(self.trunk_macs + self.expert_macs[index])
        if experts_used_hist is None or len(experts_used_hist) != len(self.expert_macs):
            raise UserInputError(
                f"routed compute needs experts_used_hist: how many samples used 1..{len(self.expert_macs)} experts")
        total = float(sum(experts_used_hist))
        if total <= 0:
            raise UserInputError("experts_used_hist is empty")
        cost = 0.0
        for used, share in enumerate(experts_used_hist, start=1):
            # a sample that used k experts ran experts 0..k-1 and asked routers 0..min(k, E-1)-1
            routers = min(used, len(self.expert_macs) - 1)
            cost += share / total * (sum(self.expert_macs[:used]) + sum(self.router_macs[:routers]))
        return self.trunk_macs + cost

    def flops_per_image(self, mode: str = "ensemble", experts_used_hist: Optional[Sequence[float]] = None) -> float:
        """FLOPs per image = 2 x MACs."""
        return 2.0 * self.macs_per_image(mode, experts_used_hist)

    def as_dict(self) -> Dict:
        return asdict(self)


@torch.no_grad()
def measure_compute(
        model: MultiExpertNet, input_size: Optional[Sequence[int]] = None, count_elementwise: bool = True,
) -> ComputeProfile:
    """Count every part of ``model`` on one image of ``input_size`` (default: its pretrained cfg)."""
    if input_size is None:
        input_size = model.pretrained_cfg["input_size"]
    input_size = tuple(int(s) for s in input_size)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros((1,) + input_size, device=param.device, dtype=param.dtype)
        trunk_macs = count_macs(lambda: model.trunk(x), count_elementwise)
        trunk_out = model.trunk(x)
        expert_macs, outputs = [], []
        for index in range(model.num_experts):
            expert_macs.append(count_macs(lambda: model._run_expert(index, trunk_out), count_elementwise))
            outputs.append(model._run_expert(index, trunk_out))
        router_macs = []
        if model.router is not None:
            for index in range(model.num_experts - 1):
                feature, logits = outputs[index]
                router_macs.append(count_macs(lambda: model.router(index, feature, logits), count_elementwise))
    finally:
        model.train(was_training)
    return ComputeProfile(input_size, trunk_macs, expert_macs, router_macs)

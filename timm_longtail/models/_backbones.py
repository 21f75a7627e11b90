"""ResNet bodies cut into a shared trunk and per-expert branches.

Both methods use the same ResNets; they differ only in where the cut is (RIDE shares the stem and
early stages, NCL++ shares nothing) and in the expert widths (RIDE reduces the later stages).
ImageNet-style stages are timm's own ``Bottleneck``/``BasicBlock`` built by ``make_blocks``, so
module names match timm/torchvision ResNets and ImageNet weights load by name.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck, make_blocks

from ._cifar_resnet import make_cifar_stage, make_cifar_stem

__all__ = ["BLOCKS", "build_resnet_stages", "split_trunk_and_experts"]

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
Stages = "OrderedDict[str, nn.Module]"


def build_resnet_stages(
        stem: str,
        layers: Sequence[int],
        widths: Sequence[int],
        in_chans: int = 3,
        block: str = "bottleneck",
        cardinality: int = 1,
        base_width: int = 64,
) -> Tuple[Stages, List[Dict]]:
    """All named children of a ResNet body and its feature levels (``module`` is a child name).

    ``stem='cifar'``: 3x3 stem, no max-pool, option-A CIFAR BasicBlocks, ``widths`` are stage
    widths (16/32/64). ``stem='imagenet'``: 7x7 stem + max-pool and timm blocks, ``widths`` are the
    blocks' planes (64/128/256/512 for ResNet-50; output channels = planes x expansion).
    """
    if stem == "cifar":
        children = make_cifar_stem(in_chans, widths[0])
        levels = [dict(num_chs=widths[0], reduction=1, module="act1")]
        in_chs, reduction = widths[0], 1
        for index, (num_blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if index == 0 else 2
            reduction *= stride
            children[f"layer{index + 1}"] = make_cifar_stage(in_chs, width, num_blocks, stride)
            levels.append(dict(num_chs=width, reduction=reduction, module=f"layer{index + 1}"))
            in_chs = width
        return children, levels
    if stem != "imagenet":
        raise ValueError(f"unknown stem {stem!r}")
    children = OrderedDict(
        conv1=nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False),
        bn1=nn.BatchNorm2d(64),
        act1=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    block_fn = BLOCKS[block]
    stages, stage_info = make_blocks(
        (block_fn,) * len(layers), tuple(widths), tuple(layers), inplanes=64,
        cardinality=cardinality, base_width=base_width,
    )
    children.update(stages)
    levels = [dict(num_chs=64, reduction=2, module="act1")] + list(stage_info)
    return children, levels


def split_trunk_and_experts(
        build_stages, num_experts: int, trunk_names: Sequence[str],
) -> Tuple[nn.Sequential, List[nn.Sequential], int, List[Dict]]:
    """Call ``build_stages()`` once per expert, share the ``trunk_names`` children of the first.

    Returns the trunk, the expert branches (the remaining children of each build), the experts'
    final channel count, and timm feature info (trunk levels, then expert-0 levels).
    """
    trunk, experts, feature_info = nn.Sequential(), [], []
    for index in range(num_experts):
        children, levels = build_stages()
        if index == 0:
            trunk = nn.Sequential(OrderedDict((n, m) for n, m in children.items() if n in trunk_names))
            for level in levels:
                prefix = "trunk." if level["module"] in trunk_names else "experts.0."
                feature_info.append(dict(level, module=prefix + level["module"]))
        experts.append(nn.Sequential(OrderedDict((n, m) for n, m in children.items() if n not in trunk_names)))
    return trunk, experts, feature_info[-1]["num_chs"], feature_info

"""CIFAR ResNet-32 pieces (He et al. 2016, section 4.2) as used by LDAM-DRW, RIDE and NCL++.

Three stages of 3x3 BasicBlocks on 32x32 inputs; the shortcut of a block that changes shape is
"option A": stride-2 subsampling plus zero-padding of the new channels, so shortcuts carry no
parameters. timm's BasicBlock always uses a 1x1 projection, hence this small block of our own.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CifarBasicBlock", "make_cifar_stage", "make_cifar_stem"]


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially and zero-pad channels evenly on both sides."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.stride = stride
        extra = out_chs - in_chs
        self.pad_before, self.pad_after = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        needs_shortcut = stride != 1 or in_chs != out_chs
        self.shortcut = PadShortcut(in_chs, out_chs, stride) if needs_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def make_cifar_stage(in_chs: int, out_chs: int, num_blocks: int, stride: int) -> nn.Sequential:
    """One stage: the first block may change width/stride, the rest keep it."""
    blocks: List[nn.Module] = [CifarBasicBlock(in_chs, out_chs, stride)]
    blocks += [CifarBasicBlock(out_chs, out_chs, 1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def make_cifar_stem(in_chans: int, out_chs: int = 16) -> "OrderedDict[str, nn.Module]":
    """3x3 conv, BN, ReLU at full resolution (named like timm's ResNet stem)."""
    return OrderedDict(
        conv1=nn.Conv2d(in_chans, out_chs, 3, stride=1, padding=1, bias=False),
        bn1=nn.BatchNorm2d(out_chs),
        act1=nn.ReLU(inplace=True),
    )

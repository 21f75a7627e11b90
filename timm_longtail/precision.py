"""Numeric precision of a run: autocast dtype, the float16 gradient scaler and the weights' dtype.

Training (``training.loop``, ``tasks``, ``validation``) and evaluation (``evaluation.passes``,
``analysis``) both read it, so it lives below both.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Optional

import torch

__all__ = ["Precision", "autocast_for", "default_amp_dtype"]


def default_amp_dtype(device: torch.device) -> torch.dtype:
    """``--amp`` without ``--amp-dtype`` (training and evaluation): float16 on CUDA, bfloat16 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast_for(device: torch.device, amp: bool, amp_dtype: Optional[torch.dtype] = None):
    """Autocast for evaluation (``default_amp_dtype`` unless given), or nothing without ``amp``."""
    return Precision(device.type, (amp_dtype or default_amp_dtype(device)) if amp else None).autocast()


@dataclass
class Precision:
    """Autocast settings, (CUDA float16 only) the gradient scaler, and the weights' dtype."""

    device_type: str
    dtype: torch.dtype | None = None  # autocast dtype; None: no autocast
    scaler: Any = None  # timm.utils.NativeScaler when float16 on CUDA
    model_dtype: torch.dtype | None = None  # --model-dtype: weights and inputs; None: float32

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

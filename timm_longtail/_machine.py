"""The machine: which device ``--device`` names here, and what a run or a benchmark ran on, as plain
values (recorded beside speeds and zoo segments: the same recipe runs at another speed, and rounds
differently, on another CPU or GPU)."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .errors import UserInputError

__all__ = ["CPU_FLAGS", "describe_machine", "resolve_device"]

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""The x86 instruction sets that change which CPU kernels torch runs (and how fast bf16 is)."""


def _cpu_flags() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return ""
    line = next((row for row in cpuinfo.read_text().splitlines() if row.startswith("flags")), "")
    present = set(line.partition(":")[2].split())
    return " ".join(flag for flag in CPU_FLAGS if flag in present)


def describe_machine(device: Optional[torch.device | str] = None) -> Dict[str, Any]:
    """torch version, threads, CPU count, processor and its relevant instruction sets, the CPU kernels torch
    dispatches to (``ATEN_CPU_CAPABILITY`` may cap them), and the GPU's name when ``device`` is a CUDA device."""
    device = torch.device(device) if device is not None else None
    gpu = torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                processor=platform.processor() or platform.machine(), cpu_flags=_cpu_flags(),
                cpu_kernels=torch.backends.cpu.get_cpu_capability(), gpu=gpu)


def resolve_device(name: str | None) -> torch.device:
    """``--device`` of train.py, validate.py and analyze.py: CUDA when available unless named; a
    device this machine lacks is one clear error."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":", 1)[0] == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available here (use --device cpu)")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserInputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device

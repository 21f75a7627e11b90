"""Compatibility shims applied before timm (and so torchvision) is first imported.

torchvision registers fake kernels for its compiled operators (``torchvision::nms``,
``torchvision::qnms``) at import time. When its ``_C`` extension cannot load (here: a CUDA build
of torchvision 0.28 next to a CPU build of torch 2.13) the schemas are missing and
``import torchvision`` fails with "operator torchvision::nms does not exist", which takes
``import timm`` down with it. We only need torchvision's Python transforms, never its detection
ops, so we define the two schemas ourselves when, and only when, the extension cannot load.
Where the extension loads, this is a no-op.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import torch

__all__ = ["ensure_torchvision_importable"]

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fragment = None  # keep the Library alive for the life of the process


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to fix
    folder = spec.submodule_search_locations[0]
    for name in os.listdir(folder):
        if name.startswith("_C") and name.endswith((".so", ".pyd")):
            try:
                torch.ops.load_library(os.path.join(folder, name))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def ensure_torchvision_importable() -> None:
    """Define the ``torchvision::nms``/``qnms`` schemas if torchvision's ``_C`` cannot load."""
    global _fragment
    if _fragment is not None or "torchvision" in sys.modules or _extension_loads():
        return
    try:
        torch.ops.torchvision.nms.default  # already defined by someone else
        return
    except (AttributeError, RuntimeError):
        pass
    _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _fragment.define(schema)

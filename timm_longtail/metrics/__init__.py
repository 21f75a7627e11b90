"""Metrics as ``evaluate`` modules shipped inside the package (loaded offline, no Hub access)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["LT_ACCURACY_PATH", "load_lt_accuracy"]

LT_ACCURACY_PATH = Path(__file__).resolve().parent / "lt_accuracy"


def load_lt_accuracy(**load_kwargs):
    """``evaluate.load`` of the long-tail accuracy module (top-1/5, many/medium/few, per class)."""
    import evaluate

    return evaluate.load(str(LT_ACCURACY_PATH), **load_kwargs)

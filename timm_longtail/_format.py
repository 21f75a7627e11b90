"""How results print: one percent format for logs, README tables and model cards."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["percent"]


def percent(value: Any, *, missing: str = "-", fraction: bool = False, digits: int = 2) -> str:
    """``71.254 -> "71.25"``; ``fraction``: the value is in [0, 1] (``0.0312 -> "3.1"`` with ``digits=1``);
    ``None`` or NaN (a split with no class, a mode not run) -> ``missing``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{(100 if fraction else 1) * float(value):.{digits}f}"

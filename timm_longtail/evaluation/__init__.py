"""Evaluating models: the pass (``passes``), its reporting (``report``) and the flags and set-up that
``validate.py`` and ``analyze.py`` share (``setup``, imported on its own: it builds models and data).

Everything public of ``passes`` and ``report`` is importable from here.
"""
from .passes import (
    ComputeCounter, evaluate_model, evaluate_mode, resolve_forward_modes,
)
from .report import CSV_COLUMNS, atomic_write_bytes, format_table, plot_per_class_accuracy, write_results

__all__ = [
    "CSV_COLUMNS", "ComputeCounter", "atomic_write_bytes", "evaluate_model",
    "evaluate_mode", "format_table", "plot_per_class_accuracy", "resolve_forward_modes", "write_results",
]

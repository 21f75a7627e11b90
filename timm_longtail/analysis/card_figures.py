"""The analyses a model card shows: hardest negatives and calibration on the evaluation split.

Written into ``<folder>/analysis/`` of an exported or published folder (``analysis.json`` with
the numbers, ``hardest_negative.png``, ``calibration.png``); the card renders them when present
(:func:`load_card_figures`). Modes: ``ensemble``, and ``routed`` when the router is trained.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from .._format import percent
from ..data import ShotSplit
from ..evaluation import atomic_write_bytes
from . import plots
from .calibration import calibration
from .hardest_negative import hardest_negative
from .outputs import collect_outputs

__all__ = ["CARD_FIGURES_DIR", "card_figure_modes", "write_card_figures", "load_card_figures"]

CARD_FIGURES_DIR = "analysis"
_SUMMARY = "analysis.json"


def card_figure_modes(model: nn.Module) -> list[str]:
    """``ensemble``, plus ``routed`` for a model whose router is trained."""
    return ["ensemble", "routed"] if getattr(model, "router_trained", False) else ["ensemble"]


def write_card_figures(model: nn.Module, loader: Any, class_counts: Sequence[int], shot_split: ShotSplit,
                       folder: Path, *, title: str, split: str, device: torch.device | str = "cpu") -> Path:
    """Run the card's analyses and write ``<folder>/analysis/``; returns that folder."""
    modes = card_figure_modes(model)
    outputs = collect_outputs(model, loader, modes, device=device, num_classes=len(class_counts))
    negatives = {m: hardest_negative(outputs.logits[m], outputs.targets, class_counts, shot_split) for m in modes}
    calibrated = {m: calibration(outputs.logits[m], outputs.targets, class_counts, shot_split) for m in modes}
    summary = dict(split=split, num_samples=int(outputs.targets.numel()), shot_split=shot_split.describe(),
                   modes=modes, hardest_negative=negatives, calibration=calibrated)
    out = Path(folder) / CARD_FIGURES_DIR
    files = [(out / "hardest_negative.png", plots.plot_hardest_negative(negatives, f"hardest negatives: {title}")),
             (out / "calibration.png", plots.plot_calibration(calibrated, f"calibration: {title}")),
             (out / _SUMMARY, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))]
    for path, data in files:  # the summary last: the card shows the figures only once it is there
        atomic_write_bytes(path, data)
    return out


def _pct(value: Optional[float]) -> str:
    return percent(value, missing="—", fraction=True, digits=1)


def _num(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def load_card_figures(folder: Path) -> Optional[Dict[str, Any]]:
    """What the card shows of ``<folder>/analysis/`` (``None`` when it holds no analysis): per mode
    and split, ECE / MCE (%), NLL and the mean hardest-negative score, and the figures' paths."""
    path = Path(folder) / CARD_FIGURES_DIR / _SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for mode in summary["modes"]:
        for split in ("all", "many", "medium", "few"):
            calibrated = summary["calibration"][mode]["splits"].get(split)
            negative = summary["hardest_negative"][mode]["splits"][split]
            if not negative["n"]:
                continue
            rows.append(dict(mode=mode, split=split, n=f"{negative['n']:,}", ece=_pct(calibrated["ece"]),
                             mce=_pct(calibrated["mce"]), nll=_num(calibrated["nll"]),
                             hardest_negative=_num(negative["mean"]),
                             above_half=_pct(negative["share_above_half"])))
    return dict(split=summary["split"], num_samples=f"{summary['num_samples']:,}", rows=rows,
                hardest_negative_png=f"{CARD_FIGURES_DIR}/hardest_negative.png",
                calibration_png=f"{CARD_FIGURES_DIR}/calibration.png")

"""README's "Published weights" and results-only tables, generated from what the zoo build committed.

Only committed files are read (``hub_cards/<entry>/results.json``, ``results/zoo/<entry>.json`` and
the manifest), so the table is the same on every checkout and CI can check that README is current.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .._format import percent
from .manifest import Entry, Manifest

__all__ = ["BEGIN", "END", "render_tables", "replace_tables"]

BEGIN, END = "<!-- zoo-table:begin -->", "<!-- zoo-table:end -->"
# Baselines, and recipe variants measured against a published recipe that did not beat it (no weights).
RESULTS_ONLY_HEADING = "Baselines and measured recipe variants (results only, no published weights):"


def _splits(row: Mapping[str, Any]) -> str:
    return " / ".join(percent(row.get(k)) for k in ("top1_many", "top1_medium", "top1_few"))


def _recipe(results: Mapping[str, Any]) -> str:
    stages = (results.get("zoo") or {}).get("stages") or []
    return " + ".join(f"{s['stage']} {s.get('epochs')} ep" for s in stages) or "-"


def _experts_used(row: Mapping[str, Any]) -> str:
    hist = row.get("experts_used_hist")
    if not hist or not sum(hist):
        return "-"
    return f"{sum((i + 1) * n for i, n in enumerate(hist)) / sum(hist):.2f}"


def _weights_row(entry: Entry, results: Optional[Mapping[str, Any]]) -> str:
    model, tag = f"`{entry.model_name}`", entry.tag
    paper = entry.paper or "-"
    if results is None:
        state = "waits for a GPU" if entry.device == "gpu" else "not trained yet"
        return f"| {model} | {tag} | {state} | - | - | - | - | - | - | {paper} |"
    modes: Dict[str, Mapping[str, Any]] = results.get("modes") or {}
    ensemble = modes.get("ensemble") or {}
    experts = {m: r for m, r in modes.items() if m.startswith("expert:")}
    best = max(experts.items(), key=lambda item: item[1].get("top1") or 0.0) if experts else None
    routed = modes.get("routed")
    macs = (routed or ensemble).get("macs_per_image")
    return (f"| {model} | {tag} | {_recipe(results)} | {percent(ensemble.get('top1'))} | "
            + (f"{percent(best[1].get('top1'))} ({best[0]})" if best else "-") + " | "
            + (percent(routed.get("top1")) if routed else "-") + f" | {_splits(ensemble)} | "
            + ("-" if macs is None else f"{macs / 1e9:.4f}") + " | "
            + (_experts_used(routed) if routed else "-") + f" | {paper} |")


def _results_only_row(entry: Entry, results: Optional[Mapping[str, Any]]) -> str:
    paper = entry.paper or "-"
    if results is None:
        return f"| `{entry.name}` | not trained yet | - | - | - | {paper} |"
    modes = results.get("modes") or {}
    row, routed = modes.get("ensemble") or {}, modes.get("routed")
    return (f"| `{entry.name}` | {_recipe(results)} | {percent(row.get('top1'))} | "
            + (percent(routed.get("top1")) if routed else "-") + f" | {_splits(row)} | {paper} |")


def _read(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def render_tables(manifest: Manifest, publish_to: Path) -> str:
    """Both tables as markdown, one row per manifest entry, in manifest order."""
    weights: List[str] = [
        "| model | tag | recipe (stages) | top-1 ensemble | best expert | routed | many / medium / few (ensemble) "
        "| GMACs/img (routed, else ensemble) | experts used (mean) | published figure |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    results_only: List[str] = [
        "| entry | recipe (stages) | top-1 ensemble | routed | many / medium / few (ensemble) | published figure |",
        "|---|---|---|---|---|---|",
    ]
    for entry in manifest.entries:
        if entry.publish == "weights":
            weights.append(_weights_row(entry, _read(entry.results_path(publish_to))))
        else:
            results_only.append(_results_only_row(entry, _read(entry.results_path(publish_to))))
    return "\n".join(weights + ["", RESULTS_ONLY_HEADING, ""] + results_only)


def replace_tables(text: str, tables: str) -> str:
    """``text`` with the part between the markers replaced by ``tables``."""
    if BEGIN not in text or END not in text.split(BEGIN, 1)[1]:
        raise ValueError(f"README lacks the {BEGIN} / {END} markers (in that order)")
    before, rest = text.split(BEGIN, 1)
    return f"{before}{BEGIN}\n{tables}\n{END}{rest.split(END, 1)[1]}"

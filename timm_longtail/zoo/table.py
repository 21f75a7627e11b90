"""README's "Published weights" and results-only tables, and its "How far to trust these numbers"
tables, generated from what the zoo build committed.

Only committed files are read (``hub_cards/<entry>/results.json``, ``results/zoo/<entry>.json``, the
manifest, and for the trust tables ``hub_cards/reference.yaml``'s reference runs and the summaries in
``results/reference/``), so the tables are the same on every checkout and CI can check that README is
current.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .._format import percent
from ..errors import UserInputError
from ..hub.card import load_reference, load_reference_run
from ..hub.results import LOSSLESS_KEY
from .manifest import Entry, Manifest

__all__ = ["BEGIN", "END", "TRUST_BEGIN", "TRUST_END", "render_tables", "render_trust_tables", "replace_tables",
           "update_readme"]

BEGIN, END = "<!-- zoo-table:begin -->", "<!-- zoo-table:end -->"
TRUST_BEGIN, TRUST_END = "<!-- trust-table:begin -->", "<!-- trust-table:end -->"
RUNNING = "running"
"""The reference-code cell while its run's summary is not committed."""
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


def replace_tables(text: str, tables: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with the part between the markers replaced by ``tables``."""
    if begin not in text or end not in text.split(begin, 1)[1]:
        raise ValueError(f"README lacks the {begin} / {end} markers (in that order)")
    before, rest = text.split(begin, 1)
    return f"{before}{begin}\n{tables}\n{end}{rest.split(end, 1)[1]}"


def update_readme(text: str, manifest: Manifest, publish_to: Path) -> str:
    """README's text with the zoo tables, and the trust tables where it has their markers, current."""
    text = replace_tables(text, render_tables(manifest, publish_to))
    if TRUST_BEGIN in text:
        text = replace_tables(text, render_trust_tables(manifest, publish_to), TRUST_BEGIN, TRUST_END)
    return text


def _entry_results(manifest: Manifest, publish_to: Path, name: str) -> Optional[Dict[str, Any]]:
    try:
        entry = manifest.entry(name)
    except UserInputError:
        return None
    return _read(entry.results_path(publish_to))


def render_trust_tables(manifest: Manifest, publish_to: Path) -> str:
    """Per reference run (the authors' code on this data): ours / the reference code / the paper, per
    forward mode; then per published weight measured on the lossless subset, its top-1 on the original
    images beside the same images as its data stores them."""
    reference = load_reference()
    lines = ["| method, model | forward mode | ours (this data) | the authors' code (this data) | paper |",
             "|---|---|---|---|---|"]
    notes = []
    for key, spec in (reference.get("reference_runs") or {}).items():
        run = load_reference_run(reference, key, publish_to)
        ours = (_entry_results(manifest, publish_to, spec["ours"]) or {}).get("modes") or {}
        paper = spec.get("paper") or {}
        for mode in spec["top1"]:
            theirs = percent(run["top1"][mode]) if run["committed"] else RUNNING
            shown_paper = (f"{percent(paper['top1'])} ({paper['source']})" if paper.get("top1") is not None
                           else f"- ({paper['note']})" if paper.get("note") else "-")
            lines.append(f"| {spec['method']}, {spec['model']} | `{mode}` | {percent((ours.get(mode) or {}).get('top1'))} "
                         f"(`{spec['ours']}`) | {theirs} | {shown_paper} |")
        files = [f"{spec['code']}: `{spec['file']}`" + ("" if run["committed"] else " (not committed yet)")]
        if run["spread"]:
            spread = run["spread"]
            files.append(f"seed-to-seed spread of ours: sample std {spread['std']} points over training seeds "
                         f"{', '.join(map(str, spread['seeds']))}, {spread['epochs']} epochs each (`{spread['file']}`)")
        notes.append(f"{spec['method']}: {'; '.join(files)}.")
    lines += ["", *[f"- {note}" for note in notes], ""]
    rows, stored = [], set()
    for entry in manifest.entries:
        block = ((_read(entry.results_path(publish_to)) if entry.publish == "weights" else None) or {}).get(
            LOSSLESS_KEY)
        if block:
            stored.add(((reference.get("data_copies") or {}).get(block["data_dir"]) or {}).get("stored_as"))
        for mode, row in ((block or {}).get("result") or {}).items():
            if mode in ("ensemble", "routed"):
                rows.append(f"| `{entry.name}` | `{mode}` | {percent(row['top1_lossless'])} | "
                             f"{percent(row['top1_dataset'])} | {row['delta']:+.2f} ({row['delta_ci95'][0]:+.2f} to "
                             f"{row['delta_ci95'][1]:+.2f}) | {row['n']:,} |")
    as_stored = f"as {stored.pop()}" if len(stored) == 1 and None not in stored else "as its data stores them"
    lines += [f"| published weight | forward mode | on the original images | on the same images {as_stored} "
              f"| difference (95 % interval) | n |", "|---|---|---|---|---|---|", *rows]
    return "\n".join(lines)

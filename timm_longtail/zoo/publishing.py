"""Publishing a trained zoo entry into the checkout: ``hub_cards/<entry>/`` (weights, config, results,
card) and the published-weights table, or a results-only entry's results and analyses; then README's tables.
Weights come only from committed code, and nothing published holds a path of the machine that trained it.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, List, Sequence

from .._paths import cards_dir as checkout_cards_dir, check_no_machine_paths
from ..analysis.commands import build_parser as build_analysis_parser, run_analysis
from ..checkpoint import load_checkpoint
from ..errors import UserInputError
from ..files import atomic_write, atomic_write_json, replace_dir
from ..hub.export import export_checkpoint, rewrite_card, write_folder_figures, write_folder_lossless_subset
from ..hub.results import LOSSLESS_KEY
from ..models.weights import WEIGHTS_FILENAME, record_published
from .manifest import Entry, Manifest
from .parking import unpark
from .provenance import entry_provenance, full_commit, portable
from .settings import BuildSettings, EntryOutcome, read_json, runs_lock, stage_dir
from .stages import entry_state, unpublishable
from .table import BEGIN, update_readme

__all__ = ["BASELINE_ANALYSES", "MAX_COMMITTED_WEIGHTS", "publish", "publish_entry", "write_baseline_analyses"]

MAX_COMMITTED_WEIGHTS = 20 * 1024 * 1024
"""Weight files up to this size are committed beside their card; larger ones only by SHA-256."""


def publish_entry(manifest: Manifest, settings: BuildSettings, entry: Entry) -> str:
    """Publish a trained entry into the checkout: its results (and analyses), or its weights folder with
    card and the published-weights table entry. Returns the summary line."""
    with runs_lock(settings.runs_dir, ".zoo-publish.lock", wait=True):  # one writer of the checkout at a time
        return _publish_locked(manifest, settings, entry)


def _publish_locked(manifest: Manifest, settings: BuildSettings, entry: Entry) -> str:

    final_dir = stage_dir(settings.runs_dir, entry, entry.final_stage)
    final = read_json(final_dir / "final.json")
    results = dict(portable(final, manifest, settings), zoo=portable(entry_provenance(manifest, settings, entry),
                                                                      manifest, settings))
    target = entry.results_path(settings.publish_to)
    selected = "best.pth" if final.get("selected_checkpoint") == "best" else "last.pth"  # what final.json evaluated
    if entry.publish == "results":
        written = write_baseline_analyses(manifest, settings, entry, final_dir / selected)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target, results)  # last: the results file is what marks the entry published
        _refresh_readme(manifest, settings)
        return f"results in {target}, analyses in {written[0].parent}" + unpark(settings, entry)
    if not isinstance(results.get("recipe"), dict):  # train.py before final.json carried it: the checkpoint's
    
        results["recipe"] = portable(load_checkpoint(final_dir / selected).get("recipe") or {}, manifest, settings)
    export_dir = settings.runs_dir / entry.name / "export"
    exported = export_checkpoint(final_dir / selected, final_dir / "final.json", export_dir, tag=entry.tag,
                                 overwrite=True, cards_dir=checkout_cards_dir(), card=False)
    weights = export_dir / WEIGHTS_FILENAME
    size = weights.stat().st_size
    commits = [c for stage in results["zoo"]["stages"] for c in stage["commits"]]
    commit = commits[-1] if commits else full_commit(manifest.root, exported.commit)
    if not commit:
        raise UserInputError(f"{entry.name}: no stage records the commit it was trained from: not published")
    folder = target.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        shutil.copyfile(export_dir / "config.json", tmp / "config.json")
        if size <= MAX_COMMITTED_WEIGHTS:
            shutil.copyfile(weights, tmp / WEIGHTS_FILENAME)
        atomic_write_json(tmp / "weights.json", dict(
            repo_id=exported.repo_id, file=WEIGHTS_FILENAME, sha256=exported.sha256, size=size,
            committed=size <= MAX_COMMITTED_WEIGHTS, commits=list(dict.fromkeys(commits)) or [commit],
            from_dirty_tree=any(stage["from_dirty_tree"] for stage in results["zoo"]["stages"])))
        atomic_write_json(tmp / "results.json", results)
        # the card from the published folder itself, as `publish` renders it again once the runs are gone;
        # with the weights at hand, first the card's analyses (hardest negatives, calibration) on the test split
        if size <= MAX_COMMITTED_WEIGHTS:
            lossless = _measure_lossless_subset(manifest, settings, entry, tmp)
            write_folder_figures(tmp, settings.data_dir(manifest, entry.dataset), device=settings.device, workers=0,
                                 cards_dir=checkout_cards_dir())
        else:
            lossless = ""
            rewrite_card(tmp, cards_dir=checkout_cards_dir())
        check_no_machine_paths(tmp.iterdir())
        # the table first: a folder in place without its table entry would read as published
        record_published(entry.name, sha256=exported.sha256, size=size, commit=commit,
                         table=settings.published_table)
        replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _refresh_readme(manifest, settings)
    return (f"published {entry.name} (sha256 {exported.sha256[:12]}..., {size / 1e6:.1f} MB) in {folder}{lossless}"
            + unpark(settings, entry))


def _measure_lossless_subset(manifest: Manifest, settings: BuildSettings, entry: Entry, folder: Path) -> str:
    """Measure the folder's weights on the original pixels of its dataset's lossless subset, when the
    manifest names one, into its ``results.json`` (the card is rendered afterwards). Where that folder is
    missing (a GPU machine given only the dataset) the figures are left out and said so: a later
    ``zoo publish`` with the folder at hand measures them. Returns what to add to the summary line."""
    lossless = settings.lossless_dir(manifest, entry.dataset)
    if lossless is None:
        return ""
    if not lossless.is_dir():
        return (f"; not measured on the original images ({lossless} not found): run `python -m "
                f"timm_longtail.zoo publish {entry.name}` where it is")
    block = write_folder_lossless_subset(folder, settings.data_dir(manifest, entry.dataset), lossless,
                                         device=settings.device, workers=0, render=False)
    ensemble = block["result"].get("ensemble") or next(iter(block["result"].values()))
    return (f"; on the original images {ensemble['top1_lossless']:.2f}, on the same images of its data "
            f"{ensemble['top1_dataset']:.2f} (ensemble, n = {block['num_samples']:,})")


# The analyses a one-expert model has (expert usage and disagreement need several experts).
BASELINE_ANALYSES = ("hardest-negative", "calibration", "test-agnostic")


def write_baseline_analyses(manifest: Manifest, settings: BuildSettings, entry: Entry, checkpoint: Path) -> List[Path]:
    """A results-only entry publishes no weights, so its analyses (what a card shows for a weights entry,
    and SADE's test-agnostic top-1) are measured now, from the final checkpoint on the test split, with
    ``analyze.py``'s own commands: ``results/analysis/<entry>.<analysis>.{json,csv,png}``."""
    data_dir = settings.data_dir(manifest, entry.dataset)
    written = []
    for name in BASELINE_ANALYSES:
        path = entry.analysis_path(settings.publish_to, name)
        argv = [name, "--checkpoint", str(checkpoint), "--device", settings.device, "--workers", "0",
                "--forward-mode", "ensemble", "--results-file", str(path)]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        run_analysis(name, build_analysis_parser().parse_args(argv))
        written.append(path)
    check_no_machine_paths(written)
    return written


def _refresh_readme(manifest: Manifest, settings: BuildSettings) -> None:
    """Rewrite the zoo tables of ``<publish_to>/README.md`` when it has them (a checkout's README)."""
    readme = settings.publish_to / "README.md"
    if readme.is_file() and BEGIN in readme.read_text(encoding="utf-8"):
        text = update_readme(readme.read_text(encoding="utf-8"), manifest, settings.publish_to)
        atomic_write(readme, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _rewrite_card(manifest: Manifest, settings: BuildSettings, entry: Entry) -> str:
    """Render a published entry's card again from its committed folder; first measure its committed
    weights on the lossless subset when its results lack those figures (or hold another SHA-256's)."""
    folder = entry.results_path(settings.publish_to).parent
    with runs_lock(settings.runs_dir, ".zoo-publish.lock", wait=True):
        recorded = read_json(folder / "results.json").get(LOSSLESS_KEY) or {}
        weights = read_json(folder / "weights.json").get("sha256")
        measured = ""
        if (folder / WEIGHTS_FILENAME).is_file() and recorded.get("weights_sha256") != weights:
            measured = _measure_lossless_subset(manifest, settings, entry, folder)
        card = rewrite_card(folder, cards_dir=checkout_cards_dir())
        _refresh_readme(manifest, settings)
    if measured.startswith("; on the original"):
        return f"its runs are gone: measured its weights{measured}; card rendered again ({card}); weights unchanged"
    return (f"its runs are gone: card rendered again from the published folder ({card}); weights and results "
            f"unchanged{measured}")


def publish(manifest: Manifest, entries: Sequence[Entry], settings: BuildSettings,
            say: Callable[[str], None] = print) -> List[EntryOutcome]:
    """Publish again, from their run folders, entries whose stages are all trained (e.g. after the card
    code improved); trains nothing. A published entry whose runs are gone gets its card rendered again
    from its committed folder. Entries not fully trained are reported and left alone. It does not
    take the build's lock (a build may be training other entries); each publication takes the
    publishing lock."""
    outcomes = []
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        state = entry_state(settings, manifest, entry)
        outcome = EntryOutcome(name=entry.name, status="unpublished", stages=dict(state["stages"]))
        missing = [name for name, status in state["stages"].items() if status != "done"]
        runs_gone = all(status in ("new", "parked") for status in state["stages"].values())
        if missing and runs_gone and state["published"] and entry.publish == "weights":
            outcome.status, outcome.detail = "published", _rewrite_card(manifest, settings, entry)
        elif missing:
            outcome.detail = f"not trained yet (stages {', '.join(missing)}): build it first"
        else:
            outcome.detail = unpublishable(manifest, settings, entry)
            if not outcome.detail:
                outcome.status, outcome.detail = "published", publish_entry(manifest, settings, entry)
        say(f"{entry.name}: {outcome.detail}")
        outcomes.append(outcome)
    return outcomes

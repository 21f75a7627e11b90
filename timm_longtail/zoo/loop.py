"""Build the zoo: train every manifest entry's stages, evaluate, export and record what is published.

A build is resumable at every level: a done stage is skipped, an interrupted one resumes from its
``last.pth`` (:mod:`.stages`), a stage whose runs folder is gone resumes from its parked copy
(:mod:`.parking`), and a published entry is skipped. A SIGINT/SIGTERM reaches the running ``train.py``,
which stops after its current step; the build then stops too and the next build carries on.

Runs live outside the work tree (``--runs-dir``, default ``../zoo-runs`` beside the checkout), so
that later work on the same machine can resume them. Each stage folder records, in ``zoo.json``,
the git commit of every segment that trained it (:mod:`.provenance`), and the card and results carry
them: weights come only from committed code (a dirty tree is refused unless ``allow_dirty``).
"""
from __future__ import annotations

import signal
import time
from typing import Callable, List, Sequence

from ..errors import UserInputError
from ..files import atomic_write_json
from .manifest import Entry, Manifest
from .parking import restore_parked
from .provenance import dirty_files
from .publishing import publish_entry
from .settings import BuildSettings, EntryOutcome, runs_lock, stage_dir, stage_status
from .stages import SignalForwarder, entry_state, run_stage, teacher_checkpoint, unpublishable

__all__ = ["build"]


def build(manifest: Manifest, entries: Sequence[Entry], settings: BuildSettings,
          say: Callable[[str], None] = print) -> List[EntryOutcome]:
    """Build ``entries`` in order; stop at the first interruption or failure. Writes ``<runs>/zoo_build.json``."""
    if not settings.allow_dirty:
        dirty = dirty_files(manifest.root)
        if dirty:
            raise UserInputError(
                f"{manifest.root} has uncommitted changes ({', '.join(dirty[:5])}): zoo weights come only from "
                f"committed code; commit, or build from a clean `git worktree`")
    runs, root = settings.runs_dir.resolve(), manifest.root.resolve()
    if runs == root or root in runs.parents:
        raise UserInputError(f"--runs-dir {settings.runs_dir} is inside the checkout {manifest.root}: keep runs "
                             f"outside the work tree (default: {root.parent / 'zoo-runs'})")
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    outcomes: List[EntryOutcome] = []
    with runs_lock(settings.runs_dir), SignalForwarder() as forwarder:
        for entry in entries:
            outcome = _build_entry(manifest, settings, entry, forwarder, say)
            outcomes.append(outcome)
            _write_summary(settings, outcomes)
            if outcome.status in ("stopped", "failed"):
                break
    return outcomes


def _build_entry(manifest: Manifest, settings: BuildSettings, entry: Entry, forwarder: SignalForwarder,
                 say: Callable[[str], None]) -> EntryOutcome:
    state = entry_state(settings, manifest, entry)
    outcome = EntryOutcome(name=entry.name, status="published", stages=dict(state["stages"]))
    if state["published"]:
        say(f"{entry.name}: published already, skipped")
        return outcome
    if entry.device == "gpu" and not (settings.include_gpu or settings.device.startswith("cuda")):
        outcome.status, outcome.detail = "waits-for-gpu", entry.note or "device: gpu"
        say(f"{entry.name}: waits for a GPU ({outcome.detail})")
        return outcome
    for stage in entry.stages:
        if stage.teacher and stage_status(stage_dir(settings.runs_dir, entry, stage)) != "done":
            teacher = manifest.entry(stage.teacher)
            if teacher_checkpoint(manifest, settings, teacher) is None:
                outcome.status = "failed"
                outcome.detail = (f"stage {stage.name} needs teacher {teacher.name}, which is neither trained in "
                                  f"{settings.runs_dir} nor published with its weights: build it first")
                say(f"{entry.name}: {outcome.detail}")
                return outcome
        if stage_status(stage_dir(settings.runs_dir, entry, stage)) == "new":
            restore_parked(settings, entry, stage, say)
        if stage_status(stage_dir(settings.runs_dir, entry, stage)) == "done":
            continue
        if forwarder.signum is not None:  # a signal between two stages: start nothing new
            outcome.status, outcome.detail = "stopped", f"stopped by a signal before stage {stage.name}"
            say(f"{entry.name}: {outcome.detail}")
            return outcome
        returncode = run_stage(manifest, settings, entry, stage, forwarder, say)
        outcome.stages[stage.name] = stage_status(stage_dir(settings.runs_dir, entry, stage))
        if forwarder.signum is not None or returncode in (130, 143, -signal.SIGINT, -signal.SIGTERM):
            outcome.status = "stopped"
            outcome.detail = (f"stage {stage.name} stopped by a signal; the next build resumes it (if this runs "
                              f"folder may be lost: python -m timm_longtail.zoo park, then commit zoo_parked/)")
            say(f"{entry.name}: {outcome.detail}")
            return outcome
        if returncode != 0 or outcome.stages[stage.name] != "done":
            outcome.status = "failed"
            outcome.detail = (f"stage {stage.name}: train.py exited with {returncode}; see "
                              f"{stage_dir(settings.runs_dir, entry, stage) / 'zoo_train.out'}")
            say(f"{entry.name}: {outcome.detail}")
            return outcome
    reason = unpublishable(manifest, settings, entry)
    if reason:
        outcome.status, outcome.detail = "unpublished", reason
    else:
        outcome.detail = publish_entry(manifest, settings, entry)
    say(f"{entry.name}: {outcome.detail}")
    return outcome


def _write_summary(settings: BuildSettings, outcomes: Sequence[EntryOutcome]) -> None:
    atomic_write_json(settings.runs_dir / "zoo_build.json", dict(
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        entries=[dict(name=o.name, status=o.status, stages=o.stages, detail=o.detail) for o in outcomes]))

"""Where zoo weights come from: the git commit (and uncommitted files) of every train.py run of a stage,
recorded as a segment of the stage's ``zoo.json``, and summed up per entry for its published results."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .._machine import describe_machine
from .._paths import label_paths, portable_paths
from ..checkpoint import commit_of_version, load_checkpoint, start_command
from ..errors import UserInputError
from .manifest import Entry, Manifest, Stage
from .settings import BuildSettings, read_json, stage_dir


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def current_commit(root: Path) -> Optional[str]:
    return _git(root, "rev-parse", "HEAD") or None


def full_commit(root: Path, commit: Optional[str]) -> Optional[str]:
    """A short commit id as the full one (when this checkout knows it)."""
    if not commit:
        return None
    return _git(root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}") or commit


def _source_commit(manifest: Manifest, settings: BuildSettings) -> Dict[str, Any]:
    """The commit a stage segment trains from: git's, else the stated ``source_commit`` (marked so)."""
    commit = current_commit(manifest.root)
    if commit is None:
        return dict(commit=settings.source_commit, commit_stated=True) if settings.source_commit else dict(commit=None)
    stated = full_commit(manifest.root, settings.source_commit) if settings.source_commit else commit
    if stated != commit:
        raise UserInputError(f"--source-commit {settings.source_commit} is not this checkout's HEAD ({commit[:12]}): "
                             f"it only names the commit of a copy of the tree without git")
    return dict(commit=commit)


def dirty_files(root: Path) -> List[str]:
    """The tracked files with uncommitted changes (untracked ones do not change what trains)."""
    out = _git(root, "status", "--porcelain", "--untracked-files=no")
    return [line[3:] for line in out.splitlines() if line.strip()]


def stage_record(manifest: Manifest, entry: Entry, stage: Stage, folder: Path) -> Dict[str, Any]:
    """The stage's ``zoo.json``; a stage begun by plain train.py gets its first segment from the checkpoint."""
    record = read_json(folder / "zoo.json")
    if not isinstance(record.get("segments"), list):
        record = dict(entry=entry.name, stage=stage.name, config=stage.config, segments=[])
    if not record["segments"] and (folder / "last.pth").is_file():
        record["segments"].append(_adopted_segment(manifest, folder / "last.pth"))
    return record


def _adopted_segment(manifest: Manifest, checkpoint: Path) -> Dict[str, Any]:
    """A stage begun by plain train.py before the build adopted it: its commit from the checkpoint."""

    commit = commit_of_version(load_checkpoint(checkpoint).get("version"))
    return dict(commit=full_commit(manifest.root, commit), adopted=True,
                note="trained with train.py outside the zoo build up to this checkpoint")


def new_segment(manifest: Manifest, settings: BuildSettings, command: Sequence[str], resumed: bool) -> Dict[str, Any]:
    """The record of a train.py run about to start on a stage: its commit (and uncommitted files), the
    machine, and the command with machine paths labelled (it goes into published results)."""
    dirty = dirty_files(manifest.root)
    return dict(**_source_commit(manifest, settings), dirty=dirty or None,
                started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), resumed=resumed,
                machine=describe_machine(settings.device),
                command=[labelled(part, manifest, settings) for part in command[1:]],
                extra_args=labelled(list(settings.extra_args), manifest, settings) or None)


def labelled(value: Any, manifest: Manifest, settings: BuildSettings) -> Any:
    """``value`` with this machine's runs, data and checkout folders as labels (``<runs>/x``, ``configs/x``)."""
    return label_paths(value, settings.path_labels(manifest))


def portable(value: Any, manifest: Manifest, settings: BuildSettings) -> Any:
    """Known machine folders as labels (``<runs>``, ``<data:cifar10>``), then any other absolute path
    relative to the checkout or as its bare name."""
    return portable_paths(labelled(value, manifest, settings), root=manifest.root)


def entry_provenance(manifest: Manifest, settings: BuildSettings, entry: Entry) -> Dict[str, Any]:
    """What trained each stage of ``entry``: its commits, machines, segments and command (the ``zoo`` block
    of the published results)."""
    stages = []
    for stage in entry.stages:
        folder = stage_dir(settings.runs_dir, entry, stage)
        final = read_json(folder / "final.json")
        segments = stage_record(manifest, entry, stage, folder)["segments"]
        commits = [full_commit(manifest.root, s.get("commit")) for s in segments if s.get("commit")]
        stages.append(dict(
            stage=stage.name, config=stage.config, teacher=stage.teacher, init_from=stage.init_from,
            commits=list(dict.fromkeys(commits)), segments=len(segments),
            machines=_distinct([s["machine"] for s in segments if s.get("machine")]) or None,
            from_dirty_tree=any(s.get("dirty") for s in segments),
            seed=final.get("seed"), epochs=final.get("epochs"), train_time_s=final.get("train_time_s"),
            train_images_per_sec=final.get("train_images_per_sec"),
            wall_time_s=_wall_time(segments),
            command=start_command(final.get("command")), commands_run=len(final.get("command_history") or []) or None,
            extra_args=sorted({a for s in segments for a in (s.get("extra_args") or [])}) or None,
            test_top1={m: row.get("top1") for m, row in (final.get("modes") or {}).items()},
        ))
    return dict(entry=entry.name, manifest=str(manifest.path.name), stages=stages)


def _distinct(values: Sequence[Any]) -> List[Any]:
    """``values`` without repeats, in first-seen order (for unhashable values such as dicts)."""
    kept: List[Any] = []
    for value in values:
        if value not in kept:
            kept.append(value)
    return kept


def _wall_time(segments: Sequence[Mapping[str, Any]]) -> Optional[float]:
    """The build's wall time over the stage's segments; None when a segment did not record it (adopted
    from plain train.py, or its build was killed): ``train_time_s`` (summed epoch times) still holds."""
    if not segments or any(s.get("seconds") is None for s in segments):
        return None
    return round(sum(float(s["seconds"]) for s in segments), 1)

"""Parked checkpoints: unfinished stages carried in the checkout from one machine's runs folder to another's.

A runs folder can be lost between two sittings (a fresh machine). ``park`` copies each unfinished
stage's latest resumable checkpoint into the checkout (``zoo_parked/<entry>/<stage>/``, committed
once); a build that finds no run for that stage resumes from the parked copy (SHA-256 checked), and
publishing the entry removes it from the checkout.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..checkpoint import load_checkpoint
from ..errors import UserInputError
from ..files import apply_umask, atomic_write_json, replace_dir, sha256_of_file
from .manifest import Entry, Manifest, Stage
from .settings import BuildSettings, is_published, parked_stage_dir, read_json, stage_dir, stage_status
from .stages import differs_from_manifest

__all__ = ["park"]

_PARKED_FILES = ("last.pth", "zoo.json", "summary.csv", "final.json")  # what resuming (or a done stage) needs


def park(manifest: Manifest, entries: Sequence[Entry], settings: BuildSettings,
         say: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Copy every trained or interrupted stage of the unpublished ``entries`` into
    ``<publish_to>/zoo_parked/<entry>/<stage>/`` (its ``last.pth``, ``zoo.json``, ``summary.csv`` and,
    when done, ``final.json``, with ``parked.json`` holding the checkpoint's SHA-256), so that a later
    build without this runs folder resumes instead of starting over. Trains nothing; a stage trained
    with another recipe than the manifest's (``--train-arg``) is refused."""

    parked = []
    for entry in entries:
        if is_published(settings, entry):
            say(f"{entry.name}: published, nothing to park")
            continue
        for stage in entry.stages:
            folder = stage_dir(settings.runs_dir, entry, stage)
            status = stage_status(folder)
            if status == "new":
                continue
            differ = differs_from_manifest(manifest, settings, entry, stage)
            if differ:
                raise UserInputError(f"{entry.name} / {stage.name} was trained with another recipe than the "
                                     f"manifest's ({'; '.join(differ[:3])}): not parked")
            target = parked_stage_dir(settings, entry, stage)

            def record(tmp: Path) -> None:  # of the copy: a running build may replace last.pth meanwhile
                atomic_write_json(tmp / "parked.json", dict(
                    entry=entry.name, stage=stage.name, status=status,
                    epoch=load_checkpoint(tmp / "last.pth").get("epoch"),
                    sha256=sha256_of_file(tmp / "last.pth"), parked=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
                apply_umask(tmp)  # it goes into the checkout: ordinary permissions, not mkdtemp's 0700

            _copy_stage_files(folder, target, record)
            epoch = read_json(target / "parked.json").get("epoch")
            say(f"{entry.name} / {stage.name}: parked ({status}, epoch {epoch}) in {target}: commit it")
            parked.append(dict(entry=entry.name, stage=stage.name, status=status, epoch=epoch, folder=str(target)))
    return parked


def _copy_stage_files(source: Path, target: Path, finish: Optional[Callable[[Path], None]] = None) -> None:
    """Copy a stage's resumable files from ``source`` into a new folder put at ``target`` in one rename
    (``finish`` adds to the new folder first): a reader never sees half a stage."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name in _PARKED_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        if finish is not None:
            finish(tmp)
        replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def restore_parked(settings: BuildSettings, entry: Entry, stage: Stage, say: Callable[[str], None]) -> None:
    """A stage without a run but with a parked checkpoint: copy it into the runs folder to resume from."""
    source = parked_stage_dir(settings, entry, stage)
    info = read_json(source / "parked.json")
    if not info:
        return
    if not (source / "last.pth").is_file() or sha256_of_file(source / "last.pth") != info.get("sha256"):
        raise UserInputError(f"{source / 'last.pth'} is missing or does not match the SHA-256 in parked.json: "
                             f"remove {source} to train the stage afresh")
    _copy_stage_files(source, stage_dir(settings.runs_dir, entry, stage))
    say(f"{entry.name} / {stage.name}: no run in {settings.runs_dir}; restored the parked checkpoint "
        f"({info.get('status')}, epoch {info.get('epoch')}) from {source}")


def unpark(settings: BuildSettings, entry: Entry) -> str:
    """Publishing ends the need for the entry's parked checkpoints: remove them (to commit the removal)."""
    folder = settings.parked_dir / entry.name
    if not folder.exists():
        return ""
    shutil.rmtree(folder)
    if settings.parked_dir.exists() and not any(settings.parked_dir.iterdir()):
        settings.parked_dir.rmdir()
    return f"; removed its parked checkpoints {folder}"

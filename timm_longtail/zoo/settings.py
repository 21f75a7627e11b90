"""What a zoo build is given (:class:`BuildSettings`), where it finds each stage's run and parked copy,
what state they are in, and what it reports per entry (:class:`EntryOutcome`)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple

from .._paths import CARDS_DIRNAME, SOURCE_ROOT
from ..files import exclusive_lock
from ..models.weights import PUBLISHED_WEIGHTS_FILE
from .manifest import Entry, Manifest, Stage

__all__ = ["BuildSettings", "EntryOutcome", "default_runs_dir", "is_published", "stage_status"]

PARKED_DIR = "zoo_parked"
"""Folder of the checkout holding the parked checkpoints of unfinished stages (``park``)."""


def default_runs_dir() -> Path:
    """``$TIMM_LT_ZOO_RUNS``, else ``zoo-runs`` beside the checkout (outside the work tree)."""
    return Path(os.environ.get("TIMM_LT_ZOO_RUNS") or (SOURCE_ROOT.parent / "zoo-runs"))


@dataclass
class BuildSettings:
    runs_dir: Path
    publish_to: Path = SOURCE_ROOT  # checkout receiving hub_cards/<entry>/, results/ and the published table
    device: str = "cpu"
    include_gpu: bool = False  # build device: gpu entries here too
    allow_dirty: bool = False
    python: str = sys.executable
    extra_args: Sequence[str] = ()  # appended to every train.py command (e.g. --max-steps-per-epoch in tests)
    data_dirs: Mapping[str, Path] = field(default_factory=dict)  # overrides the manifest's (data elsewhere)
    source_commit: Optional[str] = None  # the commit a checkout without git is (a copy of the tree, e.g. a GPU machine's)

    def data_dir(self, manifest: Manifest, dataset: str) -> Optional[Path]:
        """The dataset's folder: this machine's override, else the manifest's (None: embedded data)."""
        if dataset in self.data_dirs:
            return Path(self.data_dirs[dataset]).absolute()
        return manifest.data_dir(dataset)

    def lossless_dir(self, manifest: Manifest, dataset: str) -> Optional[Path]:
        """The folder of the original pixels of some of the dataset's test rows (None: the manifest names none)."""
        key = manifest.lossless_subsets.get(dataset)
        return None if key is None else self.data_dir(manifest, key)

    @property
    def cards_dir(self) -> Path:
        return self.publish_to / CARDS_DIRNAME

    @property
    def published_table(self) -> Path:
        return self.publish_to / PUBLISHED_WEIGHTS_FILE.relative_to(SOURCE_ROOT)

    @property
    def parked_dir(self) -> Path:
        return self.publish_to / PARKED_DIR

    def path_labels(self, manifest: Manifest) -> List[Tuple[str, str]]:
        """(prefix, label) of this machine's folders, for :func:`~timm_longtail._paths.label_paths`: the runs
        and data folders as ``<runs>``, ``<data:KEY>``, the checkout as relative paths, Python as ``python``."""
        pairs = [(str(self.runs_dir.resolve()), "<runs>"), (str(self.runs_dir), "<runs>")]
        for key in manifest.data_dirs:
            path = self.data_dir(manifest, key)
            if path is None:
                continue
            pairs += [(str(path.resolve()), f"<data:{key}>"), (str(path), f"<data:{key}>")]
        root = [str(manifest.root.resolve()), str(manifest.root)]
        pairs += [*((r + os.sep, "") for r in root), *((r, ".") for r in root),  # <root>/configs/x -> configs/x
                  (sys.executable, "python"), (self.python, "python")]
        return pairs


@dataclass
class EntryOutcome:
    name: str
    status: str  # published | unpublished (trained, recipe differs from the manifest) | stopped | waits-for-gpu | failed
    stages: Dict[str, str] = field(default_factory=dict)
    detail: str = ""


def stage_dir(runs_dir: Path, entry: Entry, stage: Stage) -> Path:
    return runs_dir / entry.name / stage.name


def parked_stage_dir(settings: BuildSettings, entry: Entry, stage: Stage) -> Path:
    return settings.parked_dir / entry.name / stage.name


def stage_status(folder: Path) -> str:
    """``done`` (final.json), ``partial`` (last.pth only: resumable) or ``new``."""
    if (folder / "final.json").is_file():
        return "done"
    if (folder / "last.pth").is_file():
        return "partial"
    return "new"


def is_published(settings: BuildSettings, entry: Entry) -> bool:
    """Results in place and, for weights, the table's SHA-256 equal to the recorded weights'."""
    target = entry.results_path(settings.publish_to)
    if not target.is_file():
        return False
    if entry.publish == "results":
        return True
    recorded = read_json(target.parent / "weights.json").get("sha256")
    table = read_json(settings.published_table).get(entry.name) or {}
    return bool(recorded) and table.get("sha256") == recorded


def read_json(path: Path) -> Dict[str, Any]:
    """A JSON object file's content; ``{}`` when it is missing or unreadable (a run's record not written yet)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def runs_lock(runs_dir: Path, name: str = ".zoo.lock", wait: bool = False) -> ContextManager[None]:
    """One build per runs folder (two would train the same stage into the same files); with ``wait``,
    a short critical section (publishing) that waits for the other holder."""
    busy = f"another zoo build is using {runs_dir}: wait for it, or stop it"
    return exclusive_lock(runs_dir / name, busy, wait=wait)

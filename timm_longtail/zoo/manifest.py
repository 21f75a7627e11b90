"""The zoo manifest: every published ``<model>.<tag>`` and the training stages that make it.

The manifest (``configs/zoo/manifest.yaml``) is the one list of what the zoo publishes. Each entry names
its stages in order; a stage is one ``train.py`` run of a recipe config, optionally started from an
earlier stage's weights (``init_from``: RIDE's router stage) or taught by another entry's final
model (``teacher``: RIDE's distillation). ``publish: weights`` entries end as
``hub_cards/<name>/`` (weights, card, results); ``publish: results`` entries (baselines) end as a
results file only. ``device: gpu`` entries are too long for a CPU and wait for a GPU run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from .._paths import CARDS_DIRNAME, SOURCE_ROOT
from ..errors import UserInputError

__all__ = ["Entry", "Manifest", "Stage", "load_manifest", "DEFAULT_MANIFEST", "ZOO_RESULTS_DIRNAME",
           "ANALYSIS_RESULTS_DIRNAME"]

DEFAULT_MANIFEST = SOURCE_ROOT / "configs" / "zoo" / "manifest.yaml"
ZOO_RESULTS_DIRNAME = "results/zoo"
"""Where a checkout keeps the results files of ``publish: results`` entries."""
ANALYSIS_RESULTS_DIRNAME = "results/analysis"
"""Where a checkout keeps the analyses of entries without a card (a card keeps its own)."""
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")
_STAGE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
PUBLISH_KINDS = ("weights", "results")
DEVICES = ("cpu", "gpu")


@dataclass(frozen=True)
class Stage:
    """One ``train.py`` run: ``config`` plus ``args``, in the entry's folder ``<runs>/<entry>/<name>``."""

    name: str
    config: str
    args: Tuple[str, ...] = ()
    init_from: Optional[str] = None  # an earlier stage of the same entry: its last.pth seeds this one
    teacher: Optional[str] = None  # another entry: its final checkpoint teaches this stage


@dataclass(frozen=True)
class Entry:
    name: str  # "<model>.<tag>" for weights; "<baseline>.<tag>" for results
    dataset: str  # key of Manifest.data_dirs
    stages: Tuple[Stage, ...]
    publish: str = "weights"
    device: str = "cpu"
    note: str = ""
    paper: str = ""  # the published figure to show beside ours, with its source (README table)

    @property
    def model_name(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def final_stage(self) -> Stage:
        return self.stages[-1]

    def results_path(self, checkout: Path) -> Path:
        """The committed results of this entry in ``checkout``: beside its weights, or a results file."""
        if self.publish == "weights":
            return Path(checkout) / CARDS_DIRNAME / self.name / "results.json"
        return Path(checkout) / ZOO_RESULTS_DIRNAME / f"{self.name}.json"

    def analysis_path(self, checkout: Path, analysis: str) -> Path:
        """The committed JSON of ``analyze.py <analysis>`` for this entry in ``checkout`` (CSV, PNG beside it)."""
        return Path(checkout) / ANALYSIS_RESULTS_DIRNAME / f"{self.name}.{analysis.replace('-', '_')}.json"


@dataclass
class Manifest:
    path: Path
    root: Path  # folder configs and data dirs are relative to (the repository)
    data_dirs: Dict[str, Optional[str]]  # None: a dataset that needs no folder (the embedded demo)
    entries: List[Entry] = field(default_factory=list)
    # dataset -> the data_dirs key of the original (lossless) pixels of some of its test rows: published
    # weights of that dataset are measured there too, beside the same rows (analyze.py lossless-subset)
    lossless_subsets: Dict[str, str] = field(default_factory=dict)

    def entry(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise UserInputError(f"{self.path}: no entry {name!r} (entries: {', '.join(e.name for e in self.entries)})")

    def select(self, names: Sequence[str]) -> List[Entry]:
        """The entries named (all when none), in manifest order, with the teachers they need first."""
        wanted = {self.entry(n).name for n in names} if names else {e.name for e in self.entries}
        changed = True
        while changed:  # a distilled student needs its teacher entry built first
            changed = False
            for entry in self.entries:
                if entry.name in wanted:
                    for stage in entry.stages:
                        if stage.teacher and stage.teacher not in wanted:
                            wanted.add(stage.teacher)
                            changed = True
        return [e for e in self.entries if e.name in wanted]

    def data_dir(self, dataset: str) -> Optional[Path]:
        value = self.data_dirs[dataset]
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() else (self.root / path)


def _err(path: Path, where: str, what: str) -> UserInputError:
    return UserInputError(f"{path}: {where}: {what}")


def _stage(path: Path, entry_name: str, raw: Any, earlier: Sequence[str]) -> Stage:
    where = f"entry {entry_name}"
    if not isinstance(raw, dict):
        raise _err(path, where, "each stage is a mapping with 'name' and 'config'")
    unknown = set(raw) - {"name", "config", "args", "init_from", "teacher"}
    if unknown:
        raise _err(path, where, f"unknown stage keys {sorted(unknown)}")
    name, config = raw.get("name"), raw.get("config")
    if not isinstance(name, str) or not _STAGE_RE.match(name):
        raise _err(path, where, f"stage name {name!r} must be letters, digits, '_' or '-'")
    if name == "export":
        raise _err(path, where, "stage name 'export' is reserved (the build's export folder)")
    if name in earlier:
        raise _err(path, where, f"stage {name!r} appears twice")
    if not isinstance(config, str):
        raise _err(path, f"{where}, stage {name}", "'config' must be a path")
    args = raw.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise _err(path, f"{where}, stage {name}", "'args' must be a list of train.py arguments")
    init_from = raw.get("init_from")
    if init_from is not None and init_from not in earlier:
        raise _err(path, f"{where}, stage {name}", f"init_from {init_from!r} is not an earlier stage")
    return Stage(name=name, config=config, args=tuple(str(a) for a in args), init_from=init_from,
                 teacher=raw.get("teacher"))


def load_manifest(path: Optional[Path] = None, root: Optional[Path] = None) -> Manifest:
    """Read and check a manifest; every problem is one :class:`UserInputError`."""
    path = Path(path or DEFAULT_MANIFEST)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserInputError(f"cannot read the zoo manifest {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise UserInputError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise UserInputError(f"{path}: expected a mapping with 'data_dirs' and a list 'entries'")
    root = Path(root) if root is not None else SOURCE_ROOT
    manifest = Manifest(path=path, root=root, data_dirs={str(k): None if v is None else str(v)
                                                        for k, v in (raw.get("data_dirs") or {}).items()})
    lossless = raw.get("lossless_subsets") or {}
    if not isinstance(lossless, dict) or not all(k in manifest.data_dirs and v in manifest.data_dirs
                                                 for k, v in lossless.items()):
        raise UserInputError(f"{path}: lossless_subsets maps a dataset of data_dirs to another key of data_dirs "
                             f"(the folder of its originals), got {lossless!r}")
    manifest.lossless_subsets = {str(k): str(v) for k, v in lossless.items()}
    names = set()
    for item in raw["entries"]:
        if not isinstance(item, dict):
            raise UserInputError(f"{path}: each entry is a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise UserInputError(f"{path}: entry name {name!r} must be '<model>.<tag>'")
        if name in names:
            raise UserInputError(f"{path}: entry {name} appears twice")
        unknown = set(item) - {"name", "dataset", "stages", "publish", "device", "note", "paper"}
        if unknown:
            raise _err(path, f"entry {name}", f"unknown keys {sorted(unknown)}")
        publish, device = item.get("publish", "weights"), item.get("device", "cpu")
        if publish not in PUBLISH_KINDS:
            raise _err(path, f"entry {name}", f"publish must be one of {PUBLISH_KINDS}")
        if device not in DEVICES:
            raise _err(path, f"entry {name}", f"device must be one of {DEVICES}")
        dataset = item.get("dataset")
        if dataset not in manifest.data_dirs:
            raise _err(path, f"entry {name}", f"dataset {dataset!r} is not in data_dirs")
        stages_raw = item.get("stages")
        if not isinstance(stages_raw, list) or not stages_raw:
            raise _err(path, f"entry {name}", "needs a non-empty list 'stages'")
        stages: List[Stage] = []
        for raw_stage in stages_raw:
            stages.append(_stage(path, name, raw_stage, [s.name for s in stages]))
        manifest.entries.append(Entry(name=name, dataset=str(dataset), stages=tuple(stages), publish=publish,
                                      device=device, note=str(item.get("note") or ""),
                                      paper=str(item.get("paper") or "")))
        names.add(name)
    for entry in manifest.entries:
        for stage in entry.stages:
            if stage.teacher is not None and (stage.teacher not in names or stage.teacher == entry.name):
                raise _err(path, f"entry {entry.name}, stage {stage.name}",
                           f"teacher {stage.teacher!r} must be another entry of the manifest")
            if not (manifest.root / stage.config).is_file():
                raise _err(path, f"entry {entry.name}, stage {stage.name}", f"config {stage.config} not found")
    return manifest

"""Build the zoo: train every manifest entry's stages, evaluate, export and record what is published.

A build is resumable at every level. A stage whose folder holds ``final.json`` is done; one with
``last.pth`` only was interrupted and resumes from it (``train.py --resume``, exact); a published
entry is skipped. A SIGINT/SIGTERM reaches the running ``train.py``, which stops after its current
step and leaves ``last.pth``; the build then stops too and the next build carries on.

Runs live outside the work tree (``--runs-dir``, default ``../zoo-runs`` beside the checkout), so
that later work on the same machine can resume them. Each stage folder records, in ``zoo.json``,
the git commit of every segment that trained it, and the card and results carry them: weights come
only from committed code (a dirty tree is refused unless ``allow_dirty``).

A runs folder can be lost between two sittings (a fresh machine). ``park`` copies each unfinished
stage's latest resumable checkpoint into the checkout (``zoo_parked/<entry>/<stage>/``, committed
once); a build that finds no run for that stage resumes from the parked copy (SHA-256 checked), and
publishing the entry removes it from the checkout.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from .._machine import describe_machine
from .._paths import CARDS_DIRNAME, SOURCE_ROOT, portable_paths
from ..analysis.commands import build_parser as build_analysis_parser, run_analysis
from ..checkpoint import commit_of_version, load_checkpoint, start_command
from ..errors import UserInputError
from ..files import apply_umask, atomic_write, atomic_write_json, exclusive_lock, replace_dir, sha256_of_file
from ..hub.card import CARDS_DIR
from ..hub.export import export_checkpoint, rewrite_card, write_folder_figures, write_folder_lossless_subset
from ..hub.results import LOSSLESS_KEY
from ..models.weights import PUBLISHED_WEIGHTS_FILE, WEIGHTS_FILENAME, record_published
from ..training import parse_args
from ..training.config import RECIPE_SETTINGS
from .manifest import Entry, Manifest, Stage
from .table import BEGIN, update_readme

__all__ = ["BuildSettings", "EntryOutcome", "build", "entry_state", "park", "publish", "stage_status",
           "default_runs_dir"]

_logger = logging.getLogger(__name__)

MAX_COMMITTED_WEIGHTS = 20 * 1024 * 1024
"""Weight files up to this size are committed beside their card; larger ones only by SHA-256."""

PARKED_DIR = "zoo_parked"
"""Folder of the checkout holding the parked checkpoints of unfinished stages (``park``)."""
_PARKED_FILES = ("last.pth", "zoo.json", "summary.csv", "final.json")  # what resuming (or a done stage) needs


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


@dataclass
class EntryOutcome:
    name: str
    status: str  # published | unpublished (trained, recipe differs from the manifest) | stopped | waits-for-gpu | failed
    stages: Dict[str, str] = field(default_factory=dict)
    detail: str = ""


def stage_dir(runs_dir: Path, entry: Entry, stage: Stage) -> Path:
    return runs_dir / entry.name / stage.name


def stage_status(folder: Path) -> str:
    """``done`` (final.json), ``partial`` (last.pth only: resumable) or ``new``."""
    if (folder / "final.json").is_file():
        return "done"
    if (folder / "last.pth").is_file():
        return "partial"
    return "new"


def entry_state(settings: BuildSettings, manifest: Manifest, entry: Entry) -> Dict[str, Any]:
    """What a build would find: published or not, each stage's status (``parked``: no run, but a
    parked checkpoint in the checkout to resume from), its epochs, and the epoch of its parked copy
    (``parked_epochs``; None when not parked), so that a run the runs folder alone holds shows."""
    stages, epochs, parked_epochs = {}, {}, {}
    for stage in entry.stages:
        folder = stage_dir(settings.runs_dir, entry, stage)
        status = stage_status(folder)
        parked_folder = parked_stage_dir(settings, entry, stage)
        parked = _read_json(parked_folder / "parked.json")
        if status == "new" and parked:
            status, folder = "parked", parked_folder
        stages[stage.name] = status
        epochs[stage.name] = _epochs_trained(folder, status)
        parked_epochs[stage.name] = parked.get("epoch")
    return dict(name=entry.name, publish=entry.publish, device=entry.device,
                published=is_published(settings, entry), stages=stages, epochs=epochs, parked_epochs=parked_epochs)


def _epochs_trained(folder: Path, status: str) -> Optional[List[int]]:
    """[epochs trained, epochs of the stage's recipe] of a stage with a run or a parked checkpoint."""
    if status == "done":
        epochs = _read_json(folder / "final.json").get("epochs")
        return None if epochs is None else [int(epochs), int(epochs)]
    if status in ("partial", "parked"):
        checkpoint = load_checkpoint(folder / "last.pth")
        total = (checkpoint.get("recipe") or {}).get("epochs")
        return [int(checkpoint.get("epoch", 0)), None if total is None else int(total)]
    return None


def is_published(settings: BuildSettings, entry: Entry) -> bool:
    """Results in place and, for weights, the table's SHA-256 equal to the recorded weights'."""
    target = entry.results_path(settings.publish_to)
    if not target.is_file():
        return False
    if entry.publish == "results":
        return True
    recorded = _read_json(target.parent / "weights.json").get("sha256")
    table = _read_json(settings.published_table).get(entry.name) or {}
    return bool(recorded) and table.get("sha256") == recorded


# ---- git ---------------------------------------------------------------------------------------
def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def current_commit(root: Path) -> Optional[str]:
    return _git(root, "rev-parse", "HEAD") or None


def _full_commit(root: Path, commit: Optional[str]) -> Optional[str]:
    """A short commit id as the full one (when this checkout knows it)."""
    if not commit:
        return None
    return _git(root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}") or commit


def _source_commit(manifest: Manifest, settings: BuildSettings) -> Dict[str, Any]:
    """The commit a stage segment trains from: git's, else the stated ``source_commit`` (marked so)."""
    commit = current_commit(manifest.root)
    if commit is None:
        return dict(commit=settings.source_commit, commit_stated=True) if settings.source_commit else dict(commit=None)
    stated = _full_commit(manifest.root, settings.source_commit) if settings.source_commit else commit
    if stated != commit:
        raise UserInputError(f"--source-commit {settings.source_commit} is not this checkout's HEAD ({commit[:12]}): "
                             f"it only names the commit of a copy of the tree without git")
    return dict(commit=commit)


def _dirty(root: Path) -> List[str]:
    out = _git(root, "status", "--porcelain", "--untracked-files=no")
    return [line[3:] for line in out.splitlines() if line.strip()]


# ---- stage runs ----------------------------------------------------------------------------------
class _Forwarder:
    """Pass SIGINT/SIGTERM on to the running train.py and remember that the build must stop."""

    def __init__(self) -> None:
        self.child: Optional[subprocess.Popen] = None
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "_Forwarder":
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _train_command(manifest: Manifest, settings: BuildSettings, entry: Entry, stage: Stage, status: str) -> List[str]:
    folder = stage_dir(settings.runs_dir, entry, stage)
    data_dir = settings.data_dir(manifest, entry.dataset)
    command = [settings.python, str(manifest.root / "train.py"), "-c", str(manifest.root / stage.config),
               "--output", str(settings.runs_dir / entry.name), "--experiment", stage.name,
               "--device", settings.device, *stage.args]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    if stage.init_from:
        command += ["--initial-checkpoint", str(folder.parent / stage.init_from / "last.pth")]
    if stage.teacher:
        teacher = teacher_checkpoint(manifest, settings, manifest.entry(stage.teacher))
        if teacher is None:
            raise UserInputError(f"{entry.name} / {stage.name}: its teacher {stage.teacher} is neither trained nor "
                                 f"published with its weights: build it first")
        command += ["--teacher", str(teacher)]
    if status == "partial":
        command += ["--resume", str(folder / "last.pth")]
    return command + list(settings.extra_args)


def teacher_checkpoint(manifest: Manifest, settings: BuildSettings, teacher: Entry) -> Optional[Path]:
    """The teacher's trained final stage (``last.pth``, with its recipe and lineage), else its published
    weights committed beside its card (SHA-256 as in the table: the runs folder may be gone), else None."""
    trained = stage_dir(settings.runs_dir, teacher, teacher.final_stage)
    if stage_status(trained) == "done":
        return trained / "last.pth"
    weights = settings.cards_dir / teacher.name / WEIGHTS_FILENAME
    if is_published(settings, teacher) and weights.is_file():
        if sha256_of_file(weights) == (_read_json(settings.published_table).get(teacher.name) or {}).get("sha256"):
            return weights
    return None


def _run_stage(manifest: Manifest, settings: BuildSettings, entry: Entry, stage: Stage, forwarder: _Forwarder,
               say: Callable[[str], None]) -> int:
    folder = stage_dir(settings.runs_dir, entry, stage)
    status = stage_status(folder)
    command = _train_command(manifest, settings, entry, stage, status)
    if status == "partial":
        _check_same_recipe(folder / "last.pth", command)
    _set_aside_later_stages(settings, entry, stage)
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / "zoo.json"
    record = _stage_record(manifest, entry, stage, folder)
    dirty = _dirty(manifest.root)
    segment = dict(**_source_commit(manifest, settings), dirty=dirty or None,
                   started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), resumed=status == "partial",
                   machine=describe_machine(settings.device),
                   command=_shown_command(command, manifest, settings),
                   extra_args=_relative(list(settings.extra_args), manifest, settings) or None)
    record["segments"].append(segment)
    atomic_write_json(record_path, record)
    if forwarder.signum is not None:  # a signal while preparing: start nothing
        return 128 + forwarder.signum
    say(f"{entry.name} / {stage.name}: {'resuming' if status == 'partial' else 'starting'} "
        f"(log: {folder / 'log.txt'})")
    started = time.time()
    with open(folder / "zoo_train.out", "ab") as out:
        # its own session: a terminal's Ctrl-C or a group kill reaches train.py once, through the
        # forwarder (a second signal would make it stop mid-step instead of after the step)
        forwarder.child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=manifest.root,
                                           start_new_session=True)
        try:
            if forwarder.signum is not None:
                forwarder.child.send_signal(forwarder.signum)
            returncode = forwarder.child.wait()
        except BaseException:
            forwarder.child.terminate()
            forwarder.child.wait()
            raise
        finally:
            forwarder.child = None
    segment.update(ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=round(time.time() - started, 1),
                   returncode=returncode)
    atomic_write_json(record_path, record)
    return returncode


def _stage_record(manifest: Manifest, entry: Entry, stage: Stage, folder: Path) -> Dict[str, Any]:
    """The stage's ``zoo.json``; a stage begun by plain train.py gets its first segment from the checkpoint."""
    record = _read_json(folder / "zoo.json")
    if not isinstance(record.get("segments"), list):
        record = dict(entry=entry.name, stage=stage.name, config=stage.config, segments=[])
    if not record["segments"] and (folder / "last.pth").is_file():
        record["segments"].append(_adopted_segment(manifest, folder / "last.pth"))
    return record


def _recipe_differences(checkpoint: Path, command: Sequence[str]) -> List[str]:
    """How the recipe recorded in ``checkpoint`` differs from the one ``command`` (train.py argv) asks for."""

    recorded = load_checkpoint(checkpoint).get("recipe") or {}
    wanted = vars(parse_args(list(command[2:])))
    differ = [f"{k}: {recorded.get(k)!r} (checkpoint) vs {wanted.get(k)!r} (manifest)"
              for k in RECIPE_SETTINGS if k in recorded and k != "model" and recorded.get(k) != wanted.get(k)]
    if recorded.get("model") and wanted.get("model") and recorded["model"] != wanted["model"]:
        differ.append(f"model: {recorded['model']!r} vs {wanted['model']!r}")
    return differ


def _check_same_recipe(checkpoint: Path, command: Sequence[str]) -> None:
    """Refuse to resume a checkpoint whose recipe differs from the stage's (e.g. a plain run with other flags)."""
    differ = _recipe_differences(checkpoint, command)
    if differ:
        raise UserInputError(f"{checkpoint} was trained with another recipe than its manifest stage ("
                             + "; ".join(differ[:4]) + "): move the folder aside to start the stage afresh")


def _differs_from_manifest(manifest: Manifest, settings: BuildSettings, entry: Entry, stage: Stage) -> List[str]:
    """How the stage's ``last.pth`` recipe differs from the manifest's command (without ``--train-arg``)."""
    plain = BuildSettings(runs_dir=settings.runs_dir, publish_to=settings.publish_to, device=settings.device,
                          python=settings.python)
    return _recipe_differences(stage_dir(settings.runs_dir, entry, stage) / "last.pth",
                               _train_command(manifest, plain, entry, stage, "done"))


def _unpublishable(manifest: Manifest, settings: BuildSettings, entry: Entry) -> str:
    """Why a trained entry must not be published under its name ("" when it may): a stage whose last
    checkpoint's recipe is not the manifest's (e.g. built with ``--train-arg --epochs=2``)."""
    for stage in entry.stages:
        differ = _differs_from_manifest(manifest, settings, entry, stage)
        if differ:
            return (f"stage {stage.name} was trained with another recipe than the manifest's ("
                    + "; ".join(differ[:3]) + "): not published; move its folder aside and build again")
    return ""


def _set_aside_later_stages(settings: BuildSettings, entry: Entry, stage: Stage) -> None:
    """A stage about to (re)train makes the later stages' results stale: move their folders aside."""
    later = entry.stages[[s.name for s in entry.stages].index(stage.name) + 1:]
    for other in later:
        folder = stage_dir(settings.runs_dir, entry, other)
        if folder.exists():
            folder.rename(folder.with_name(f"{folder.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}"))


def _adopted_segment(manifest: Manifest, checkpoint: Path) -> Dict[str, Any]:
    """A stage begun by plain train.py before the build adopted it: its commit from the checkpoint."""

    commit = commit_of_version(load_checkpoint(checkpoint).get("version"))
    return dict(commit=_full_commit(manifest.root, commit), adopted=True,
                note="trained with train.py outside the zoo build up to this checkpoint")


def _shown_command(command: Sequence[str], manifest: Manifest, settings: BuildSettings) -> List[str]:
    """The command with machine paths made relative (it goes into published results)."""
    return [_relative_text(part, manifest, settings) for part in command[1:]]


def _prefixes(manifest: Manifest, settings: BuildSettings) -> List[tuple]:
    pairs = [(str(settings.runs_dir.resolve()), "<runs>"), (str(settings.runs_dir), "<runs>")]
    for key in manifest.data_dirs:
        path = settings.data_dir(manifest, key)
        if path is None:
            continue
        pairs += [(str(path.resolve()), f"<data:{key}>"), (str(path), f"<data:{key}>")]
    root = [str(manifest.root.resolve()), str(manifest.root)]
    pairs += [*((r + os.sep, "") for r in root), *((r, ".") for r in root),  # <root>/configs/x -> configs/x
              (sys.executable, "python"), (settings.python, "python")]
    return sorted(pairs, key=lambda p: -len(p[0]))


# where a path prefix may end: ``/work/zoo-runs`` labels ``/work/zoo-runs/x`` but not ``/work/zoo-runs-old/x``
_PATH_END = r"(?=$|[\s/'\"=:,;)\]])"


_DOTTED_PATH = re.compile(r"(?<![\w.<>:/])/[\w.-]+(?:/[\w.-]+)*/\.\.(?:/[\w.-]+)*")  # /a/b/../c


def _relative_text(text: str, manifest: Manifest, settings: BuildSettings) -> str:
    # normal form first: a run started from a worktree records its data as <worktree>/../shared/..., which
    # must get the same label whichever checkout publishes it
    text = _DOTTED_PATH.sub(lambda match: os.path.normpath(match.group(0)), text)
    for prefix, label in _prefixes(manifest, settings):
        if prefix and prefix in text:
            end = "" if prefix.endswith(os.sep) else _PATH_END
            text = re.sub(re.escape(prefix) + end, lambda _match, label=label: label, text)
    return text


def _relative(value: Any, manifest: Manifest, settings: BuildSettings) -> Any:
    if isinstance(value, str):
        return _relative_text(value, manifest, settings)
    if isinstance(value, dict):
        return {k: _relative(v, manifest, settings) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, manifest, settings) for v in value]
    return value


# ---- parked checkpoints ----------------------------------------------------------------------------
def parked_stage_dir(settings: BuildSettings, entry: Entry, stage: Stage) -> Path:
    return settings.parked_dir / entry.name / stage.name


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
            differ = _differs_from_manifest(manifest, settings, entry, stage)
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
            epoch = _read_json(target / "parked.json").get("epoch")
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


def _restore_parked(settings: BuildSettings, entry: Entry, stage: Stage, say: Callable[[str], None]) -> None:
    """A stage without a run but with a parked checkpoint: copy it into the runs folder to resume from."""
    source = parked_stage_dir(settings, entry, stage)
    info = _read_json(source / "parked.json")
    if not info:
        return
    if not (source / "last.pth").is_file() or sha256_of_file(source / "last.pth") != info.get("sha256"):
        raise UserInputError(f"{source / 'last.pth'} is missing or does not match the SHA-256 in parked.json: "
                             f"remove {source} to train the stage afresh")
    _copy_stage_files(source, stage_dir(settings.runs_dir, entry, stage))
    say(f"{entry.name} / {stage.name}: no run in {settings.runs_dir}; restored the parked checkpoint "
        f"({info.get('status')}, epoch {info.get('epoch')}) from {source}")


def _unpark(settings: BuildSettings, entry: Entry) -> str:
    """Publishing ends the need for the entry's parked checkpoints: remove them (to commit the removal)."""
    folder = settings.parked_dir / entry.name
    if not folder.exists():
        return ""
    shutil.rmtree(folder)
    if settings.parked_dir.exists() and not any(settings.parked_dir.iterdir()):
        settings.parked_dir.rmdir()
    return f"; removed its parked checkpoints {folder}"


# ---- publishing ----------------------------------------------------------------------------------
def _provenance(manifest: Manifest, settings: BuildSettings, entry: Entry) -> Dict[str, Any]:
    stages = []
    for stage in entry.stages:
        folder = stage_dir(settings.runs_dir, entry, stage)
        final = _read_json(folder / "final.json")
        segments = _stage_record(manifest, entry, stage, folder)["segments"]
        commits = [_full_commit(manifest.root, s.get("commit")) for s in segments if s.get("commit")]
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


_ABSOLUTE = re.compile(r"(?<![\w.<>:/])/(?:[\w.-]+/)+[\w.-]*")  # /a/b... not after a word, ../, <label>, scheme:/


def _portable(value: Any, manifest: Manifest, settings: BuildSettings) -> Any:
    """Known machine folders as labels (``<runs>``, ``<data:cifar10>``), then any other absolute path
    relative to the checkout or as its bare name."""
    return portable_paths(_relative(value, manifest, settings), root=manifest.root)


def _check_no_machine_paths(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.suffix in (".json", ".md"):
            found = _ABSOLUTE.search(path.read_text(encoding="utf-8"))
            if found:
                raise UserInputError(f"{path.name} would publish the machine path {found.group(0)!r}: not published")


def _publish(manifest: Manifest, settings: BuildSettings, entry: Entry) -> str:
    with _exclusive(settings.runs_dir, ".zoo-publish.lock", wait=True):  # one writer of the checkout at a time
        return _publish_locked(manifest, settings, entry)


def _publish_locked(manifest: Manifest, settings: BuildSettings, entry: Entry) -> str:

    final_dir = stage_dir(settings.runs_dir, entry, entry.final_stage)
    final = _read_json(final_dir / "final.json")
    results = dict(_portable(final, manifest, settings), zoo=_portable(_provenance(manifest, settings, entry),
                                                                      manifest, settings))
    target = entry.results_path(settings.publish_to)
    selected = "best.pth" if final.get("selected_checkpoint") == "best" else "last.pth"  # what final.json evaluated
    if entry.publish == "results":
        written = write_baseline_analyses(manifest, settings, entry, final_dir / selected)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target, results)  # last: the results file is what marks the entry published
        _refresh_readme(manifest, settings)
        return f"results in {target}, analyses in {written[0].parent}" + _unpark(settings, entry)
    if not isinstance(results.get("recipe"), dict):  # train.py before final.json carried it: the checkpoint's
    
        results["recipe"] = _portable(load_checkpoint(final_dir / selected).get("recipe") or {}, manifest, settings)
    export_dir = settings.runs_dir / entry.name / "export"
    exported = export_checkpoint(final_dir / selected, final_dir / "final.json", export_dir, tag=entry.tag,
                                 overwrite=True, cards_dir=CARDS_DIR, card=False)
    weights = export_dir / WEIGHTS_FILENAME
    size = weights.stat().st_size
    commits = [c for stage in results["zoo"]["stages"] for c in stage["commits"]]
    commit = commits[-1] if commits else _full_commit(manifest.root, exported.commit)
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
                                 cards_dir=CARDS_DIR)
        else:
            lossless = ""
            rewrite_card(tmp, cards_dir=CARDS_DIR)
        _check_no_machine_paths(tmp.iterdir())
        # the table first: a folder in place without its table entry would read as published
        record_published(entry.name, sha256=exported.sha256, size=size, commit=commit,
                         table=settings.published_table)
        replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _refresh_readme(manifest, settings)
    return (f"published {entry.name} (sha256 {exported.sha256[:12]}..., {size / 1e6:.1f} MB) in {folder}{lossless}"
            + _unpark(settings, entry))


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
    _check_no_machine_paths(written)
    return written


def _refresh_readme(manifest: Manifest, settings: BuildSettings) -> None:
    """Rewrite the zoo tables of ``<publish_to>/README.md`` when it has them (a checkout's README)."""
    readme = settings.publish_to / "README.md"
    if readme.is_file() and BEGIN in readme.read_text(encoding="utf-8"):
        text = update_readme(readme.read_text(encoding="utf-8"), manifest, settings.publish_to)
        atomic_write(readme, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ---- the build -----------------------------------------------------------------------------------
def build(manifest: Manifest, entries: Sequence[Entry], settings: BuildSettings,
          say: Callable[[str], None] = print) -> List[EntryOutcome]:
    """Build ``entries`` in order; stop at the first interruption or failure. Writes ``<runs>/zoo_build.json``."""
    if not settings.allow_dirty:
        dirty = _dirty(manifest.root)
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
    with _exclusive(settings.runs_dir), _Forwarder() as forwarder:
        for entry in entries:
            outcome = _build_entry(manifest, settings, entry, forwarder, say)
            outcomes.append(outcome)
            _write_summary(settings, outcomes)
            if outcome.status in ("stopped", "failed"):
                break
    return outcomes


def _exclusive(runs_dir: Path, name: str = ".zoo.lock", wait: bool = False):
    """One build per runs folder (two would train the same stage into the same files); with ``wait``,
    a short critical section (publishing) that waits for the other holder."""
    busy = f"another zoo build is using {runs_dir}: wait for it, or stop it"
    return exclusive_lock(runs_dir / name, busy, wait=wait)


def _build_entry(manifest: Manifest, settings: BuildSettings, entry: Entry, forwarder: _Forwarder,
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
            _restore_parked(settings, entry, stage, say)
        if stage_status(stage_dir(settings.runs_dir, entry, stage)) == "done":
            continue
        if forwarder.signum is not None:  # a signal between two stages: start nothing new
            outcome.status, outcome.detail = "stopped", f"stopped by a signal before stage {stage.name}"
            say(f"{entry.name}: {outcome.detail}")
            return outcome
        returncode = _run_stage(manifest, settings, entry, stage, forwarder, say)
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
    reason = _unpublishable(manifest, settings, entry)
    if reason:
        outcome.status, outcome.detail = "unpublished", reason
    else:
        outcome.detail = _publish(manifest, settings, entry)
    say(f"{entry.name}: {outcome.detail}")
    return outcome


def _rewrite_card(manifest: Manifest, settings: BuildSettings, entry: Entry) -> str:
    """Render a published entry's card again from its committed folder; first measure its committed
    weights on the lossless subset when its results lack those figures (or hold another SHA-256's)."""
    folder = entry.results_path(settings.publish_to).parent
    with _exclusive(settings.runs_dir, ".zoo-publish.lock", wait=True):
        recorded = _read_json(folder / "results.json").get(LOSSLESS_KEY) or {}
        weights = _read_json(folder / "weights.json").get("sha256")
        measured = ""
        if (folder / WEIGHTS_FILENAME).is_file() and recorded.get("weights_sha256") != weights:
            measured = _measure_lossless_subset(manifest, settings, entry, folder)
        card = rewrite_card(folder, cards_dir=CARDS_DIR)
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
            outcome.detail = _unpublishable(manifest, settings, entry)
            if not outcome.detail:
                outcome.status, outcome.detail = "published", _publish(manifest, settings, entry)
        say(f"{entry.name}: {outcome.detail}")
        outcomes.append(outcome)
    return outcomes


def _write_summary(settings: BuildSettings, outcomes: Sequence[EntryOutcome]) -> None:
    atomic_write_json(settings.runs_dir / "zoo_build.json", dict(
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        entries=[dict(name=o.name, status=o.status, stages=o.stages, detail=o.detail) for o in outcomes]))

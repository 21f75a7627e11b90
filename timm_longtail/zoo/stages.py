"""A zoo entry's stages: where each stands, and training one with train.py in a process of its own.

A stage whose folder holds ``final.json`` is done; one with ``last.pth`` only was interrupted and resumes
from it (``train.py --resume``, exact) once its recorded recipe is checked against the manifest's. A
SIGINT/SIGTERM reaches the running train.py (:class:`SignalForwarder`), which stops after its current
step and leaves ``last.pth``.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..checkpoint import load_checkpoint
from ..errors import UserInputError
from ..files import atomic_write_json, sha256_of_file
from ..models.weights import WEIGHTS_FILENAME
from ..training import parse_args
from ..training.config import RECIPE_SETTINGS
from .manifest import Entry, Manifest, Stage
from .provenance import new_segment, stage_record
from .settings import BuildSettings, is_published, parked_stage_dir, read_json, stage_dir, stage_status

__all__ = ["SignalForwarder", "entry_state", "run_stage", "teacher_checkpoint"]


class SignalForwarder:
    """Pass SIGINT/SIGTERM on to the running train.py and remember that the build must stop."""

    def __init__(self) -> None:
        self.child: Optional[subprocess.Popen] = None
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "SignalForwarder":
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
        if sha256_of_file(weights) == (read_json(settings.published_table).get(teacher.name) or {}).get("sha256"):
            return weights
    return None


def run_stage(manifest: Manifest, settings: BuildSettings, entry: Entry, stage: Stage, forwarder: SignalForwarder,
              say: Callable[[str], None]) -> int:
    """Train one stage with train.py in a process of its own (resuming its ``last.pth`` when there is one),
    recording the run as a segment of the stage's ``zoo.json``. Returns train.py's exit status."""
    folder = stage_dir(settings.runs_dir, entry, stage)
    status = stage_status(folder)
    command = _train_command(manifest, settings, entry, stage, status)
    if status == "partial":
        _check_same_recipe(folder / "last.pth", command)
    _set_aside_later_stages(settings, entry, stage)
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / "zoo.json"
    record = stage_record(manifest, entry, stage, folder)
    segment = new_segment(manifest, settings, command, resumed=status == "partial")
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


def differs_from_manifest(manifest: Manifest, settings: BuildSettings, entry: Entry, stage: Stage) -> List[str]:
    """How the stage's ``last.pth`` recipe differs from the manifest's command (without ``--train-arg``)."""
    plain = BuildSettings(runs_dir=settings.runs_dir, publish_to=settings.publish_to, device=settings.device,
                          python=settings.python)
    return _recipe_differences(stage_dir(settings.runs_dir, entry, stage) / "last.pth",
                               _train_command(manifest, plain, entry, stage, "done"))


def unpublishable(manifest: Manifest, settings: BuildSettings, entry: Entry) -> str:
    """Why a trained entry must not be published under its name ("" when it may): a stage whose last
    checkpoint's recipe is not the manifest's (e.g. built with ``--train-arg --epochs=2``)."""
    for stage in entry.stages:
        differ = differs_from_manifest(manifest, settings, entry, stage)
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


def entry_state(settings: BuildSettings, manifest: Manifest, entry: Entry) -> Dict[str, Any]:
    """What a build would find: published or not, each stage's status (``parked``: no run, but a
    parked checkpoint in the checkout to resume from), its epochs, and the epoch of its parked copy
    (``parked_epochs``; None when not parked), so that a run the runs folder alone holds shows."""
    stages, epochs, parked_epochs = {}, {}, {}
    for stage in entry.stages:
        folder = stage_dir(settings.runs_dir, entry, stage)
        status = stage_status(folder)
        parked_folder = parked_stage_dir(settings, entry, stage)
        parked = read_json(parked_folder / "parked.json")
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
        epochs = read_json(folder / "final.json").get("epochs")
        return None if epochs is None else [int(epochs), int(epochs)]
    if status in ("partial", "parked"):
        checkpoint = load_checkpoint(folder / "last.pth")
        total = (checkpoint.get("recipe") or {}).get("epochs")
        return [int(checkpoint.get("epoch", 0)), None if total is None else int(total)]
    return None

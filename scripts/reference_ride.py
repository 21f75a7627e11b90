#!/usr/bin/env python3
"""Run the RIDE authors' own code (github frank-xwang/RIDE-LongTailRecognition, ``train.py``) on this
CPU and on the shared CIFAR-10 parquet: CIFAR-10-LT IF 100, ResNet-32, 3 experts, stage 1 (experts,
200 epochs) then its EA stage (the router, 5 epochs), so that our ``ride_resnet32_3e`` can be told
apart from theirs on the same data (issue 41).

Measurement tooling, not part of the package; it imports the reference code from a local copy of
the repository and changes none of its lines:

    git -C <mirror> archive HEAD | tar -x -C /tmp/ride-ref          # the reference code, unmodified
    REF_SRC=/tmp/ride-ref python scripts/reference_ride.py run experts --run-dir R >> R/ref.log
    REF_SRC=/tmp/ride-ref python scripts/reference_ride.py run router --run-dir R >> R/ref.log
    python scripts/reference_ride.py summarize R --out results/reference/ride_3e_reference_code_200ep.json

The repository has CIFAR-100 configs only; ``run`` writes the CIFAR-10 ones into the run folder from
``configs/config_imbalance_cifar100_ride.json`` and ``..._ride_ea.json`` with these changes, and no
other: ``num_classes`` 10, the data loader ``ImbalanceCIFAR10DataLoader`` (the code's own, IF 100),
the router's ``top_choices_num`` 10 (its 30 exceeds the class count; our router clamps it the same
way), ``save_dir`` the run folder, stage 1 saving a checkpoint every epoch (to resume) and its test
pass only every ``EVAL_EVERY`` epochs and over the last 10 with best-model tracking off (the pass
is unshuffled and touches no training state; the published figure is the last epoch's).

What ``run`` patches around the code (``_reference_shims``): CUDA calls are no-ops on a CPU build of
torch; torchvision's ``CIFAR10`` reads the shared parquet; the experts run channels-last (the same
arithmetic, faster here); Python, numpy and torch are seeded with ``--seed`` (the code seeds none;
its ``IMBALANCECIFAR10`` seeds numpy with 0 to pick the subset, as it does on a GPU); its
``MetricTracker`` (running loss and accuracy for the log) keeps its sums in a dict, as pandas 3's
copy-on-write refuses its in-place writes. After each
stage the trained model (the reference's own module) is evaluated once more on the 10,000 test
images for per-class accuracy and, for the router, how many experts each image used; that JSON is
what ``summarize`` reads.

Resuming stage 1 after a stop: ``run experts --run-dir R`` again picks the newest
``checkpoint-epoch*.pth`` and passes it to the code's own ``-r``. The code restores weights,
optimizer and loss state but builds its LambdaLR afresh (a resumed run would restart the warm-up);
``run`` sets the scheduler's epoch to the resumed one, the one fix a resume needs. The code saves no
RNG state, so a resumed run re-seeds and draws a different (equally random) batch order from then on.
A run longer than a sitting whose run folder may not survive: ``park --run-dir R`` copies the newest
checkpoint, its config and the log into ``results/reference/parked/ride_3e_reference_code/`` (commit
them); ``run experts`` in an empty run folder starts from there.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from timm_longtail.data.longtail import ShotSplit

from timm_longtail.files import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_shims import (MetricTracker, channels_last, cifar10_from_parquet, cuda_calls_on_cpu,  # noqa: E402
                              DEFAULT_DATA, seed_everything)

EXPERTS_CONFIG = "configs/config_imbalance_cifar100_ride.json"
ROUTER_CONFIG = "configs/config_imbalance_cifar100_ride_ea.json"
PARKED = Path(__file__).resolve().parents[1] / "results" / "reference" / "parked" / "ride_3e_reference_code"
"""Where ``park`` keeps the newest stage-1 checkpoint in the checkout between sittings."""
KEEP_EVERY = 40
"""Stage-1 checkpoints kept as the reference keeps them (its ``save_period``); the others are
removed once the next one is written."""


def cifar10_config(src: Path, reference_config: str, run_dir: Path, stage: str, epochs: int | None = None) -> dict:
    """The reference's CIFAR-100 config turned into the CIFAR-10-LT one (the module docstring's list);
    ``epochs`` shortens the stage for a trial (not the recipe)."""
    config = json.loads((src / reference_config).read_text())
    config["name"] = f"Imbalance_CIFAR10_LT_RIDE_{stage}"
    config["arch"]["args"]["num_classes"] = 10
    config["data_loader"]["type"] = "ImbalanceCIFAR10DataLoader"
    config["trainer"]["save_dir"] = str(run_dir / stage)
    if stage == "experts":
        config["trainer"]["save_period"] = 1
        config["trainer"]["monitor"] = "off"
    else:
        config["arch"]["args"]["top_choices_num"] = 10
    if epochs is not None:
        config["trainer"]["epochs"] = epochs
    return config


def _newest_checkpoint(stage_dir: Path) -> Path | None:
    found = sorted(stage_dir.glob("models/*/*/checkpoint-epoch*.pth"),
                   key=lambda p: int(re.search(r"epoch(\d+)", p.name).group(1)))
    return found[-1] if found else None


def _park(run_dir: Path, parked: Path) -> Path:
    """Copy the newest stage-1 checkpoint, its run's config and the log into ``parked`` (a folder in
    the checkout, committed), so that a lost run folder resumes from it (:func:`_unpark`)."""
    newest = _newest_checkpoint(run_dir / "experts")
    if newest is None:
        raise SystemExit(f"error: {run_dir} holds no stage-1 checkpoint to park")
    parked.mkdir(parents=True, exist_ok=True)
    for old in parked.glob("checkpoint-epoch*.pth"):
        old.unlink()
    for source, name in ((newest, newest.name), (newest.parent / "config.json", "config.json"),
                         (run_dir / "ref.log", "ref.log")):
        tmp = parked / f".{name}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, parked / name)
    return parked / newest.name


def _unpark(run_dir: Path, parked: Path) -> None:
    """A run folder without stage-1 checkpoints takes the parked one (and its log) back, in the layout
    the code's ``-r`` expects (``config.json`` beside the checkpoint)."""
    if _newest_checkpoint(run_dir / "experts") is not None or not parked.is_dir():
        return
    found = sorted(parked.glob("checkpoint-epoch*.pth"))
    if not found:
        return
    target = run_dir / "experts" / "models" / "parked" / "parked"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(parked / "config.json", target / "config.json")
    shutil.copyfile(found[-1], target / found[-1].name)
    if (parked / "ref.log").is_file() and not (run_dir / "ref.log").exists():
        shutil.copyfile(parked / "ref.log", run_dir / "ref.log")
    print(f"=> unparked {found[-1].name} from {parked}", flush=True)


def _test_pass(trainer, out: Path) -> dict:
    """The trained reference model on the 10,000 test images: per-class top-1 and, for the router,
    how many images used 1..E experts."""
    model, loader = trainer.model.eval(), trainer.valid_data_loader
    correct = torch.zeros(10, dtype=torch.long)
    total = torch.zeros(10, dtype=torch.long)
    experts_used: torch.Tensor | None = None
    with torch.no_grad():
        for images, targets in loader:
            output = model(images)
            if isinstance(output, tuple):  # the EA model at test time: (logits, experts per image)
                output, used = output
                counts = torch.bincount(used.view(-1), minlength=trainer.real_model.backbone.num_experts + 1)
                experts_used = counts if experts_used is None else experts_used + counts
            elif isinstance(output, dict):
                output = output["output"]
            hit = output.argmax(dim=1) == targets
            correct += torch.bincount(targets[hit], minlength=10)
            total += torch.bincount(targets, minlength=10)
    result = dict(train_class_counts=list(trainer.data_loader.cls_num_list), images=int(total.sum()), top1=round(100 * float(correct.sum() / total.sum()), 2),
                  per_class_accuracy=[round(100 * float(c / t), 1) for c, t in zip(correct, total)],
                  per_class_correct=correct.tolist(), per_class_total=total.tolist())
    if experts_used is not None:
        result["images_by_experts_used"] = experts_used[1:].tolist()
        result["mean_experts_used"] = round(float((experts_used * torch.arange(len(experts_used))).sum()
                                                  / experts_used.sum()), 4)
    atomic_write_json(out, result)
    return result


def _run(stage: str, run_dir: Path, seed: int, data: Path, epochs: int | None) -> None:
    src = Path(os.environ.get("REF_SRC", "/work/ride-ref")).resolve()
    eval_every = int(os.environ.get("EVAL_EVERY", "20"))
    run_dir = run_dir.resolve()
    stage_dir = run_dir / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    cuda_calls_on_cpu(trusted_dirs=(run_dir,))
    cifar10_from_parquet(data)
    seed_everything(seed)

    os.chdir(src)  # the code reads logger/logger_config.json relative to its folder
    sys.path.insert(0, str(src))
    import model.model as module_arch
    import train as ride_train
    import trainer.trainer as ride_trainer
    from parse_config import ConfigParser

    reference = EXPERTS_CONFIG if stage == "experts" else ROUTER_CONFIG
    config_file = stage_dir / "config.json"
    atomic_write_json(config_file, cifar10_config(src, reference, run_dir, stage, epochs))

    module_arch.ResNet32Model = channels_last(module_arch.ResNet32Model)
    module_arch.ResNet32EAModel = channels_last(module_arch.ResNet32EAModel)
    if stage == "experts":
        _unpark(run_dir, PARKED)
        resume = _newest_checkpoint(stage_dir)
        argv = ["-c", str(config_file)] + (["-r", str(resume)] if resume else [])
    else:
        stage1 = _newest_checkpoint(run_dir / "experts")
        last = json.loads((run_dir / "experts" / "config.json").read_text())["trainer"]["epochs"] if stage1 else None
        if stage1 is None or stage1.name != f"checkpoint-epoch{last}.pth":
            raise SystemExit(f"error: the router stage needs the experts' last checkpoint; newest: {stage1}")
        argv = ["-c", str(config_file), "-r", str(stage1)]
    print(f"=> reference_ride {stage}: {' '.join(argv)} (seed {seed})", flush=True)

    ride_trainer.MetricTracker = MetricTracker  # pandas 3 (module docstring)
    Trainer = ride_trainer.Trainer
    train_epoch, init = Trainer._train_epoch, Trainer.__init__

    def timed_epoch(self, epoch):
        if stage == "experts":  # the sparse test pass (module docstring)
            self.do_validation = epoch % eval_every == 0 or epoch > self.epochs - 10
        start = time.time()
        lr = self.optimizer.param_groups[0]["lr"]
        log = train_epoch(self, epoch)
        seconds = time.time() - start
        images = len(self.data_loader.sampler) if self.data_loader.sampler is not None else len(self.data_loader.dataset)
        print(f"EPOCH {epoch} lr {lr:.6g} time {seconds:.1f}s {images / seconds:.1f} img/s "
              f"loss {log['loss']:.5f} val_accuracy {log.get('val_accuracy', float('nan')):.5f}", flush=True)
        return log

    def init_resumed(self, *a, **k):
        init(self, *a, **k)
        if stage == "experts" and self.lr_scheduler is not None and self.start_epoch > 1:
            self.lr_scheduler.last_epoch = self.start_epoch - 1  # the code's LambdaLR starts afresh (docstring)
            print(f"=> resumed at epoch {self.start_epoch}; lr schedule at epoch {self.start_epoch - 1}", flush=True)
        _state["trainer"] = self

    _state: dict = {}
    Trainer._train_epoch, Trainer.__init__ = timed_epoch, init_resumed
    if stage == "experts":
        save = Trainer._save_checkpoint

        def save_and_prune(self, epoch, save_best=False, best_only=False):
            save(self, epoch, save_best=save_best, best_only=best_only)
            previous = self.checkpoint_dir / f"checkpoint-epoch{epoch - 1}.pth"
            if (epoch - 1) % KEEP_EVERY and previous.exists():
                previous.unlink()
        Trainer._save_checkpoint = save_and_prune

    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", default=None)
    parser.add_argument("-r", "--resume", default=None)
    parser.add_argument("-d", "--device", default=None)
    sys.argv = [sys.argv[0], *argv]
    config = ConfigParser.from_args(parser)
    ride_train.main(config)
    if "trainer" in _state:
        result = _test_pass(_state["trainer"], stage_dir / "test.json")
        print(f"TEST {stage} " + json.dumps({k: v for k, v in result.items() if not k.startswith("per_class_c")}), flush=True)


_EPOCH = re.compile(r"^EPOCH (\d+) lr (\S+) time (\S+)s (\S+) img/s loss (\S+) val_accuracy (\S+)")
_STAGE = re.compile(r"^=> reference_ride (\w+):")


def _summarize(run_dir: Path, out: Path, run: dict) -> dict:
    """The run's test figures and timing as one JSON: per stage the final test pass (per class,
    many / medium split of CIFAR-10-LT IF 100) and the per-epoch log, each epoch's last record."""
    log = run_dir / "ref.log"
    if not log.is_file():
        raise SystemExit(f"error: {log} not found")
    stages: dict = {}
    stage = None
    for line in log.read_text().splitlines():
        if m := _STAGE.match(line):
            stage = m.group(1)
            stages.setdefault(stage, dict(epochs={}, sittings=0))["sittings"] += 1
        elif (m := _EPOCH.match(line)) and stage:
            epoch = int(m.group(1))
            val = float(m.group(6))
            stages[stage]["epochs"][epoch] = dict(epoch=epoch, lr=float(m.group(2)), seconds=float(m.group(3)),
                                                  images_per_sec=float(m.group(4)), train_loss=float(m.group(5)),
                                                  **({} if np.isnan(val) else dict(test_top1=round(100 * val, 2))))
    summary: dict = dict(what="frank-xwang/RIDE-LongTailRecognition train.py (RIDE ResNet-32, 3 experts, "
                              "CIFAR-10-LT IF 100) on ../shared/data/cifar10 (JPEG q75), this CPU", run=run)
    for name, record in stages.items():
        test_file = run_dir / name / "test.json"
        if not test_file.is_file():
            raise SystemExit(f"error: stage {name} has no final test pass ({test_file}); has it finished?")
        test = json.loads(test_file.read_text())
        splits = ShotSplit.from_rule("standard").class_splits(test["train_class_counts"])
        acc = test["per_class_accuracy"]
        by_split = {s: round(float(np.mean([a for a, c in zip(acc, splits) if c == s])), 2) if s in splits else None
                    for s in ("many", "medium", "few")}
        epochs = [record["epochs"][e] for e in sorted(record["epochs"])]
        summary[name] = dict(
            epochs_run=len(epochs), sittings=record["sittings"],
            train_time_s=round(sum(e["seconds"] for e in epochs), 1),
            median_images_per_sec=float(np.median([e["images_per_sec"] for e in epochs])) if epochs else None,
            test=dict(test, **by_split, shot_split=ShotSplit.from_rule("standard").describe()),
            epochs=epochs)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train one stage with the reference code (resumes stage 1)")
    run.add_argument("stage", choices=("experts", "router"))
    run.add_argument("--run-dir", type=Path, required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--data", type=Path, default=DEFAULT_DATA)
    run.add_argument("--epochs", type=int, default=None, help="the stage shortened, for a trial only")
    park = commands.add_parser("park", help="copy the newest stage-1 checkpoint into the checkout (commit it)")
    park.add_argument("--run-dir", type=Path, required=True)
    summarize = commands.add_parser("summarize", help="the run's test figures as JSON")
    summarize.add_argument("run_dir", type=Path)
    summarize.add_argument("--out", type=Path, required=True)
    summarize.add_argument("--reference-commit", default=None)
    summarize.add_argument("--command", default=None, help="how the run was started (recorded as given)")
    args = parser.parse_args()
    if args.command == "run":
        _run(args.stage, args.run_dir, args.seed, args.data, args.epochs)
    elif args.command == "park":
        print(f"parked {_park(args.run_dir, PARKED)}")
    else:
        run_info = {k: v for k, v in dict(reference_commit=args.reference_commit, command=args.command).items() if v}
        summary = _summarize(args.run_dir, args.out, run_info)
        print(json.dumps({k: summary[k]["test"]["top1"] for k in ("experts", "router") if k in summary}))


if __name__ == "__main__":
    main()

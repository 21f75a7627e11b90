#!/usr/bin/env python3
"""Run Cao et al.'s own LDAM-DRW code (github kaidic/LDAM-DRW, ``cifar_train.py``) on this CPU and on
the shared CIFAR-10 parquet, to tell our training apart from theirs on the same data (issue 13, 0b).

Measurement tooling, not part of the package; it imports the reference code from a local copy of
the repository and changes none of its lines:

    git -C <mirror> archive HEAD | tar -x -C /tmp/ldam-ref         # the reference code, unmodified
    cd <run folder> && REF_SRC=/tmp/ldam-ref REF_CL=1 python scripts/reference_ldam_drw.py run \\
        --imb_type exp --imb_factor 0.01 --loss_type LDAM --train_rule DRW --seed 0 -j 2 > ref.log
    python scripts/reference_ldam_drw.py summarize ref.log --out results/ldam_drw_reference_code.json
    REF_SRC=/tmp/ldam-ref python scripts/reference_ldam_drw.py convert checkpoint/<store_name>/ckpt.pth.tar \
        --out ref_ldam_drw.pth                # validate.py / analyze.py --checkpoint ref_ldam_drw.pth

What ``run`` patches around the code (``_reference_shims``): CUDA calls are no-ops on a CPU build
of torch; torchvision's ``CIFAR10`` reads the shared parquet (the same 50,000 / 10,000 rows in the
original order, so the reference's own ``IMBALANCECIFAR10`` picks its long-tailed subset itself);
tensorboardX and sklearn's confusion matrix (logging only) are stand-ins; ``REF_CL=1`` runs the
model channels-last (the same arithmetic, faster on this CPU); the test pass every epoch runs only
every ``EVAL_EVERY`` epochs and over the last 10 (the test loader is unshuffled and touches no
training state; skipping it only changes which global-RNG draws seed the training loader's workers).

A short matched schedule (``REF_SCALE_TO=40``): the learning-rate steps move to the scaled epochs
(x0.01 after epoch 32, x0.0001 after 36 of 40, warm-up unchanged) by replacing
``adjust_learning_rate``, and DRW's switch, written inline as ``idx = epoch // 160``, needs that one
line changed to ``epoch // 32`` in the measurement copy of the code (the only edit; say so).

Resuming a run that could not finish in one sitting: the code's own ``--resume
checkpoint/<store_name>/ckpt.pth.tar`` (saved after every epoch), with the same flags, appending to
the same log. Its ``torch.load(..., map_location='cuda:0')`` is sent to the CPU here. The code saves
no RNG state, so a resumed run re-seeds and draws a different (equally random) batch order from
then on; ``summarize`` keeps the last record of an epoch that ran twice and counts the sittings.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from timm_longtail.files import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_shims import DEFAULT_DATA, channels_last, cifar10_from_parquet, cuda_calls_on_cpu  # noqa: E402


def _run(argv: list[str]) -> None:
    src = os.environ.get("REF_SRC", "/work/ref-ldam/src")
    data = os.environ.get("REF_DATA", str(DEFAULT_DATA))
    eval_every = int(os.environ.get("EVAL_EVERY", "20"))
    cuda_calls_on_cpu()
    cifar10_from_parquet(data)

    tbx = types.ModuleType("tensorboardX")

    class _Writer:
        def __init__(self, *a, **k):
            pass

        def __getattr__(self, name):
            return lambda *a, **k: None
    tbx.SummaryWriter = _Writer
    sys.modules["tensorboardX"] = tbx
    skm = types.ModuleType("sklearn.metrics")
    skmc = types.ModuleType("sklearn.utils.multiclass")

    def confusion_matrix(y_true, y_pred):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        n = int(max(y_true.max(), y_pred.max())) + 1
        return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)
    skm.confusion_matrix = confusion_matrix
    skmc.unique_labels = lambda *ys: np.unique(np.concatenate([np.asarray(y) for y in ys]))
    sys.modules.update({"sklearn": types.ModuleType("sklearn"), "sklearn.metrics": skm,
                        "sklearn.utils": types.ModuleType("sklearn.utils"), "sklearn.utils.multiclass": skmc})

    sys.path.insert(0, src)
    import models as ref_models
    if os.environ.get("REF_CL") == "1":
        ref_models.resnet32 = channels_last(ref_models.resnet32)
    import cifar_train

    validate = cifar_train.validate

    def sparse_validate(val_loader, model, criterion, epoch, args, *a, **k):
        if (epoch + 1) % eval_every == 0 or epoch >= args.epochs - 10:
            return validate(val_loader, model, criterion, epoch, args, *a, **k)
        return torch.tensor(0.0)
    cifar_train.validate = sparse_validate
    train = cifar_train.train

    def timed_train(train_loader, model, criterion, optimizer, epoch, args, *a, **k):
        start = time.time()
        out = train(train_loader, model, criterion, optimizer, epoch, args, *a, **k)
        seconds = time.time() - start
        print(f"EPOCH {epoch} lr {optimizer.param_groups[0]['lr']:.6g} time {seconds:.1f}s "
              f"{len(train_loader.dataset) / seconds:.1f} img/s", flush=True)
        return out
    cifar_train.train = timed_train
    if os.environ.get("REF_SCALE_TO"):  # a short matched schedule: see the module docstring
        epochs = int(os.environ["REF_SCALE_TO"])
        first, second = round(epochs * 160 / 200), round(epochs * 180 / 200)

        def scaled_learning_rate(optimizer, epoch, args):  # the code's steps, at the scaled epochs
            epoch = epoch + 1
            lr = args.lr * epoch / 5 if epoch <= 5 else args.lr * (0.0001 if epoch > second else
                                                                   0.01 if epoch > first else 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
        cifar_train.adjust_learning_rate = scaled_learning_rate
    sys.argv = [sys.argv[0], *argv]
    cifar_train.main()


_EPOCH = re.compile(r"^EPOCH (\d+) lr (\S+) time (\S+)s (\S+) img/s")
_RESULT = re.compile(r"^val Results: Prec@1 (\S+) Prec@5 (\S+)")
_CLASSES = re.compile(r"^val Class Accuracy: \[(.*)\]")


def _summarize(log: Path, out: Path, run: dict) -> dict:
    by_epoch, by_epoch_evaluation, epoch, sittings = {}, {}, None, 0
    for line in log.read_text().splitlines():
        if line.startswith("=> creating model"):  # printed once per start of the code
            sittings += 1
        if m := _EPOCH.match(line):  # an epoch cut short by a stop runs again after resuming: keep the last
            epoch = int(m.group(1))
            by_epoch[epoch] = dict(epoch=epoch, lr=float(m.group(2)), seconds=float(m.group(3)),
                                   images_per_sec=float(m.group(4)))
        elif m := _RESULT.match(line):
            by_epoch_evaluation[epoch] = dict(epoch=epoch, top1=float(m.group(1)), top5=float(m.group(2)))
        elif (m := _CLASSES.match(line)) and epoch in by_epoch_evaluation:
            by_epoch_evaluation[epoch]["per_class_accuracy"] = [round(100 * float(v), 1) for v in m.group(1).split(",")]
    epochs = [by_epoch[e] for e in sorted(by_epoch)]
    evaluations = [by_epoch_evaluation[e] for e in sorted(by_epoch_evaluation)]
    if not evaluations:
        raise SystemExit(f"error: {log} has no test evaluation")
    last, best = evaluations[-1], max(evaluations, key=lambda e: e["top1"])
    summary = dict(
        what="kaidic/LDAM-DRW cifar_train.py (LDAM, DRW, CIFAR-10, IF 100) on ../shared/data/cifar10, this CPU",
        run=run,
        epochs_run=len(epochs), sittings=max(sittings, 1), last_epoch=last, best_evaluated=dict(epoch=best["epoch"], top1=best["top1"]),
        evaluated_epochs=[e["epoch"] for e in evaluations],
        train_time_s=round(sum(e["seconds"] for e in epochs), 1),
        median_images_per_sec=float(np.median([e["images_per_sec"] for e in epochs])),
        evaluations=evaluations)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the reference cifar_train.py; its flags follow", add_help=False)
    summarize = commands.add_parser("summarize", help="the test figures of a run's log, as JSON")
    summarize.add_argument("log", type=Path)
    summarize.add_argument("--out", type=Path, required=True)
    summarize.add_argument("--reference-commit", default=None, help="the reference repository's commit that ran")
    summarize.add_argument("--command", default=None, help="how the run was started (recorded as given)")
    summarize.add_argument("--changed", default=None, help="lines changed in the measurement copy, if any")
    args, rest = parser.parse_known_args()
    if args.command == "run":
        _run(rest)
    else:
        if rest:
            parser.error(f"unknown arguments {rest}")
        run = {k: v for k, v in dict(reference_commit=args.reference_commit, command=args.command,
                                     changed=args.changed).items() if v}
        summary = _summarize(args.log, args.out, run)
        print(json.dumps({k: summary[k] for k in ("epochs_run", "last_epoch", "best_evaluated", "train_time_s")}))


if __name__ == "__main__":
    main()

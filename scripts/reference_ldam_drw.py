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

What ``run`` patches around the code: CUDA calls are no-ops on a CPU build of torch;
torchvision's ``CIFAR10`` reads the shared parquet (the same 50,000 / 10,000 rows in the original
order, so the reference's own ``IMBALANCECIFAR10`` picks its long-tailed subset itself);
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
import timm_longtail  # noqa: F401  before timm and torchvision: the torchvision CPU shim
import timm
import torch
import torch.nn as nn
import torchvision
from timm.models import clean_state_dict

from timm_longtail.checkpoint import save_checkpoint
from timm_longtail.data.longtail import longtail_class_counts
from timm_longtail.data.sources import _decode_rows, _find_columns, _labels, _load_parquet_split
from timm_longtail.models.weights import sha256_of_file

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OUR_MODEL = dict(model_name="ride_resnet32_2e", model_kwargs=dict(num_experts=1, reduce_dimension=False))
"""The reference's resnet32(use_norm=True) as our model: configs/ldam_drw_r32_cifar10lt.yaml's network."""


def _run(argv: list[str]) -> None:
    src = os.environ.get("REF_SRC", "/work/ref-ldam/src")
    data = os.environ.get("REF_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"))
    eval_every = int(os.environ.get("EVAL_EVERY", "20"))

    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.FloatTensor = torch.FloatTensor
    torch.cuda.set_device = lambda *a, **k: None
    load = torch.load
    torch.load = lambda f, *a, map_location=None, **k: load(f, *a, map_location="cpu", **k)

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

    cache: dict = {}

    def cifar_init(self, root, train=True, transform=None, target_transform=None, download=False):
        split = "train" if train else "test"
        if split not in cache:
            ds = _load_parquet_split(data, [split], None, split, "CIFAR-10")
            image_column, label_column = _find_columns(ds, "label")
            cache[split] = (_decode_rows(ds, image_column, np.arange(len(ds)), split), _labels(ds, label_column).tolist())
        self.root, self.train, self.transform, self.target_transform = root, train, transform, target_transform
        self.data, self.targets = cache[split][0].copy(), list(cache[split][1])
        self.classes = [str(i) for i in range(10)]
    torchvision.datasets.CIFAR10.__init__ = cifar_init

    sys.path.insert(0, src)
    import models as ref_models
    if os.environ.get("REF_CL") == "1":
        plain = ref_models.resnet32

        def resnet32_channels_last(*a, **k):
            model = plain(*a, **k).to(memory_format=torch.channels_last)
            model.register_forward_pre_hook(lambda mod, args: (args[0].contiguous(memory_format=torch.channels_last),))
            return model
        ref_models.resnet32 = resnet32_channels_last
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
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out)
    return summary


def our_state_dict(reference: dict, model: nn.Module) -> dict:
    """The reference ResNet-32's weights under our model's names: the stem and layer1 are our trunk,
    a later stage is ours where the trunk has it, else expert 0's; the cosine head's (in, out) weight
    is our (out, in) one. Every tensor must land once, with its shape. ``reference``: wrapper prefixes
    (DataParallel's ``module.``) already removed."""
    ours = model.state_dict()
    mapped = {}
    for key, value in reference.items():
        if key == "linear.weight":
            mapped["heads.0.fc.weight"] = value.t().contiguous()
            continue
        target = next((f"{prefix}{key}" for prefix in ("trunk.", "experts.0.") if f"{prefix}{key}" in ours), None)
        if target is None or ours[target].shape != value.shape:
            raise SystemExit(f"error: the reference tensor {key} {tuple(value.shape)} has no place in {OUR_MODEL['model_name']}")
        mapped[target] = value
    missing = sorted(set(ours) - set(mapped))
    if missing:
        raise SystemExit(f"error: the reference checkpoint lacks {len(missing)} of our tensors, e.g. {missing[0]}")
    return mapped


def _convert(checkpoint: Path, out: Path, reference_commit: str | None) -> dict:
    """A reference ``ckpt.pth.tar`` as a timm-longtail checkpoint (so validate.py and analyze.py read it),
    with the reference's forward checked against ours when its code is at hand (``REF_SRC``)."""
    if not checkpoint.is_file():
        raise SystemExit(f"error: checkpoint not found: {checkpoint}")
    reference = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state_dict = clean_state_dict(reference["state_dict"])  # saved under DataParallel: module.conv1.weight ...
    model = timm.create_model(OUR_MODEL["model_name"], num_classes=len(CIFAR10_CLASSES), **OUR_MODEL["model_kwargs"])
    model.load_state_dict(our_state_dict(state_dict, model), strict=True)
    check = None
    src = os.environ.get("REF_SRC")
    if src:  # the reference's logits are cosines; ours carry the LDAM scale s = 30 inside the head
        sys.path.insert(0, src)
        from models import resnet32  # the reference code (not vendored)
        theirs = resnet32(num_classes=len(CIFAR10_CLASSES), use_norm=True)
        theirs.load_state_dict(state_dict)
        images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits, cosines = model.eval()(images), theirs.eval()(images)
        check = dict(images=8, max_abs_difference_to_30_cosines=float((logits - 30.0 * cosines).abs().max()))
        if not torch.allclose(logits, 30.0 * cosines, rtol=1e-4, atol=1e-4):
            raise SystemExit(f"error: our model's logits are not 30 x the reference's cosines ({check})")
    epoch = int(reference.get("epoch", 0))
    source = dict(code="kaidic/LDAM-DRW cifar_train.py", commit=reference_commit, file=checkpoint.name,
                  sha256=sha256_of_file(checkpoint), epochs_trained=epoch, forward_check=check)
    save_checkpoint(out, model, model_name=OUR_MODEL["model_name"],
                    class_counts=longtail_class_counts(5000, len(CIFAR10_CLASSES), 100.0),
                    class_names=CIFAR10_CLASSES, model_kwargs=OUR_MODEL["model_kwargs"],
                    extra=dict(epoch=epoch - 1, converted_from=source,
                               dataset=dict(name="cifar10_lt", imbalance_factor=100.0, seed=0, split="train")))
    return source


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
    convert = commands.add_parser("convert", help="a reference checkpoint as a timm-longtail one (validate.py, analyze.py)")
    convert.add_argument("checkpoint", type=Path, help="the reference's checkpoint/<store_name>/ckpt.pth.tar")
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--reference-commit", default=None)
    args, rest = parser.parse_known_args()
    if args.command == "run":
        _run(rest)
    elif args.command == "convert":
        if rest:
            parser.error(f"unknown arguments {rest}")
        print(json.dumps(_convert(args.checkpoint, args.out, args.reference_commit)))
    else:
        if rest:
            parser.error(f"unknown arguments {rest}")
        run = {k: v for k, v in dict(reference_commit=args.reference_commit, command=args.command,
                                     changed=args.changed).items() if v}
        summary = _summarize(args.log, args.out, run)
        print(json.dumps({k: summary[k] for k in ("epochs_run", "last_epoch", "best_evaluated", "train_time_s")}))


if __name__ == "__main__":
    main()

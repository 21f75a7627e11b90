"""The pieces of a training run, built from ``train.py``'s arguments: checkpoints read, data,
model, teacher, loss, precision, loaders, output folder.

Every builder checks what it builds, so bad input fails here, before the run creates its folder.
"""
from __future__ import annotations

import argparse
import copy
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.distributed as dist
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import NativeScaler
from torch import nn
from torch.utils.data import DistributedSampler

from .. import losses
from ..checkpoint import build_model_from_checkpoint, load_checkpoint
from ..data import (
    ClassBalancedSampler, MultiViewTransform, build_dataset, canonical_dataset_name, create_loader,
    create_train_transform,
)
from ..data.batch_augment import BatchAugment, check_batch_recipe
from ..data.benchmarks import SEEDED_LONGTAIL, SMALL_IMAGE_DATASETS
from ..data.splits import (
    LabelledSubset, class_count_list, dataset_targets, eval_cap, stratified_cap, stratified_holdout,
)
from ..errors import UserInputError
from ..precision import Precision, default_amp_dtype
from .device_loader import DeviceBatchLoader
from .distributed import DistContext
from .methods import MethodSpec
from .seeding import EpochSeededSampler, SeededDataset, ShuffleSampler

__all__ = [
    "Checkpoints", "Data", "build_data", "build_loss", "build_teacher", "common_steps",
    "create_model", "default_train_transform", "eval_loader", "ignore_stop_signals", "output_dir_for", "read_checkpoints",
    "resolve_model_name", "resolve_precision", "set_transform", "train_loader",
]

_logger = logging.getLogger("train")



def default_train_transform(spec: MethodSpec, dataset: str) -> str:
    """Augmentation recipe of the reference implementations for this method and dataset."""
    if dataset in SMALL_IMAGE_DATASETS:
        return f"{spec.transform_family}_cifar"
    if spec.transform_family == "nclpp":
        return "nclpp_imagenet"
    return "inat" if dataset == "inat2018" else "imagenet"


@dataclass
class Checkpoints:
    """Checkpoint dicts read at start-up (each loaded once, with weights_only=True)."""

    resume: dict[str, Any] | None = None
    initial: dict[str, Any] | None = None
    teacher: dict[str, Any] | None = None


@dataclass
class Data:
    train: Any  # dataset trained on (possibly a LabelledSubset)
    test: Any
    val: Any | None
    full_class_counts: list[int]  # the long-tailed training set's counts: shot splits
    train_class_counts: list[int]  # counts of the images trained on: loss priors
    class_names: list[str]
    info: dict[str, Any]
    img_size: int | None


def read_checkpoints(args: argparse.Namespace, resumed: dict[str, Any] | None = None) -> Checkpoints:
    """The checkpoints the flags name (``resumed``: the ``--resume`` one, when already read). A resume does not
    read ``--initial-checkpoint``: its weights and lineage are the resumed checkpoint's."""
    resume = resumed if resumed is not None or not args.resume else load_checkpoint(args.resume)
    found = Checkpoints(
        resume=resume,
        initial=load_checkpoint(args.initial_checkpoint) if args.initial_checkpoint and resume is None else None,
        teacher=load_checkpoint(args.teacher) if args.teacher else None,
    )
    if found.resume is not None:
        recipe = found.resume.get("recipe") or {}
        name = found.resume.get("model_name")
        if args.model and name != args.model:
            raise UserInputError(f"--resume {args.resume} is a checkpoint of '{name}', not of --model {args.model}")
        for key in ("method", "stage"):
            if recipe.get(key) != getattr(args, key):
                raise UserInputError(
                    f"--resume {args.resume} was trained with --{key} {recipe.get(key)}, not {getattr(args, key)}")
        if "optimizer" not in found.resume:
            raise UserInputError(f"--resume {args.resume} holds no training state (optimizer, epoch): "
                                 f"use --initial-checkpoint to start from its weights")
        experts = (found.resume.get("model_kwargs") or {}).get("num_experts")
        if args.num_experts is not None and experts != args.num_experts:
            raise UserInputError(f"--resume {args.resume} has {experts} experts, not --num-experts {args.num_experts}")
    if found.initial is not None and args.model and found.initial.get("model_name") != args.model:
        raise UserInputError(f"--initial-checkpoint {args.initial_checkpoint} is a checkpoint of "
                             f"'{found.initial.get('model_name')}', not of --model {args.model}")
    return found


def resolve_model_name(args: argparse.Namespace, found: Checkpoints) -> str:
    for ckpt in (found.resume, found.initial):
        if ckpt is not None:
            return str(ckpt.get("model_name"))
    return str(args.model)


def build_data(args: argparse.Namespace, spec: MethodSpec) -> Data:
    name = canonical_dataset_name(args.dataset)
    recipe = args.train_transform or default_train_transform(spec, name)
    if args.longtail_seed != 0 and name not in SEEDED_LONGTAIL:
        raise UserInputError(f"--longtail-seed resamples the long-tailed draw of {', '.join(SEEDED_LONGTAIL)}; "
                             f"{name}'s training set is fixed")
    full = build_dataset(name, args.data_dir, args.train_split, imbalance_factor=args.imbalance_factor,
                         seed=args.longtail_seed)
    test = build_dataset(name, args.data_dir, args.test_split, imbalance_factor=args.imbalance_factor,
                         seed=args.longtail_seed)
    full_counts = class_count_list(full.class_counts)
    if test.num_classes != full.num_classes:
        raise UserInputError(f"--test-split {args.test_split} has {test.num_classes} classes, the training "
                             f"split {full.num_classes}")
    img_size = args.img_size
    if img_size is None and getattr(full, "images", None) is not None and recipe.endswith("_cifar"):
        img_size = int(full.images.shape[1])  # small-image recipes train at the images' own size
    train_tf = create_train_transform(recipe, img_size=img_size)
    if args.num_copies > 1:
        train_tf = MultiViewTransform(train_tf, args.num_copies)

    targets = dataset_targets(full)
    train_idx, val_idx = np.arange(len(full)), None
    if args.val_split_fraction > 0:
        train_idx, val_idx = stratified_holdout(targets, args.val_split_fraction, seed=args.seed)
        if len(val_idx) == 0:
            raise UserInputError(f"--val-split-fraction {args.val_split_fraction} holds out no image; raise it")
    if args.max_train_samples is not None:
        train_idx = stratified_cap(targets, train_idx, args.max_train_samples, seed=args.seed)
    val = None
    if val_idx is not None:
        val = LabelledSubset(copy.copy(full), val_idx)  # own transform, shared image array
    train_view = copy.copy(full)
    train_view.transform = train_tf
    train = train_view if len(train_idx) == len(full) else LabelledSubset(train_view, train_idx)
    train_counts = class_count_list(train.class_counts) if isinstance(train, LabelledSubset) else full_counts
    empty = [i for i, n in enumerate(train_counts) if n == 0]
    if empty:
        raise UserInputError(f"classes {empty[:10]} have no training image left after the held-out split / "
                             f"--max-train-samples; lower them")
    if args.max_eval_samples is not None and args.max_eval_samples < len(test):
        test_targets = dataset_targets(test)
        test = LabelledSubset(test, eval_cap(test_targets, args.max_eval_samples))
    info = dict(getattr(full, "info", {}) or {})
    info.update(name=name, train_transform=recipe, num_copies=args.num_copies, train_images=len(train),
                val_images=0 if val is None else len(val), val_split_fraction=args.val_split_fraction)
    return Data(train=train, test=test, val=val, full_class_counts=full_counts, train_class_counts=train_counts,
                class_names=list(full.class_names), info=info, img_size=img_size)


def set_transform(dataset: Any, transform: Any) -> None:
    target = dataset.dataset if isinstance(dataset, LabelledSubset) else dataset
    target.transform = transform


def create_model(args: argparse.Namespace, name: str, found: Checkpoints,
                  num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The model and the keyword arguments that re-create it (recorded in every checkpoint)."""
    source = found.resume if found.resume is not None else found.initial
    if source is not None:
        model, _ = build_model_from_checkpoint(source)
        kwargs = dict(source.get("model_kwargs") or {})
        where = "--resume" if found.resume is not None else "--initial-checkpoint"
    else:
        kwargs = dict(args.model_kwargs or {})
        kwargs["num_classes"] = num_classes
        if args.num_experts is not None:
            kwargs["num_experts"] = args.num_experts
        try:
            model = timm.create_model(name, pretrained=args.pretrained, **kwargs)
        except RuntimeError as error:
            raise UserInputError(f"cannot create --model {name}: {str(error).splitlines()[0]}") from None
        except TypeError as error:
            raise UserInputError(f"--model {name} does not take these options: {error}") from None
        where = "--model"
        if args.pretrained_backbone:
            _load_backbone(model, args.pretrained_backbone)
    if model.num_classes != num_classes:
        raise UserInputError(f"{where}: the model has {model.num_classes} classes, the dataset {num_classes}")
    return model, kwargs


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A bare state dict (torchvision/timm .pth or .safetensors) or one of our checkpoints."""
    if path.suffix == ".safetensors":
        return load_checkpoint(path)["state_dict"]
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file
        raise UserInputError(f"{path} is not a readable weights file: {str(error).splitlines()[0]}") from None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UserInputError(f"{path} holds no state dict of tensors")
    return payload


def _load_backbone(model: nn.Module, source: str) -> None:
    """ImageNet-pretrained ResNet weights into the trunk and every expert (e.g. NCL++ Places-LT)."""
    path = Path(source)
    if path.is_file():
        state_dict = _read_state_dict(path)
    else:
        try:
            state_dict = timm.create_model(source, pretrained=True).state_dict()
        except Exception as error:  # unknown name, no network, missing weights: all the same to the user
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserInputError(f"--pretrained-backbone {source}: neither a file nor a timm model with "
                                 f"weights ({reason})") from None
    loaded = model.load_backbone_state_dict(state_dict)
    if loaded == 0:
        raise UserInputError(f"--pretrained-backbone {source}: no tensor matches this model's trunk or experts")
    _logger.info("loaded %d backbone tensors from %s", loaded, source)


def build_teacher(found: Checkpoints, num_classes: int, device: torch.device,
                  bn_mode: str = "eval", dtype: torch.dtype | None = None) -> nn.Module | None:
    """The frozen distillation teacher; ``bn_mode`` 'train' normalises each batch with its own
    statistics (the RIDE code never calls ``eval()`` on its teacher), 'eval' with the running ones."""
    if found.teacher is None:
        return None
    teacher, ckpt = build_model_from_checkpoint(found.teacher)
    counts = ckpt.get("class_counts") or []
    if teacher.num_classes != num_classes or (counts and len(counts) != num_classes):
        raise UserInputError(f"--teacher has {teacher.num_classes} classes, the dataset {num_classes}")
    teacher.set_forward_mode("ensemble")
    teacher.train(bn_mode == "train")  # no grad either way: only BatchNorm's statistics differ
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher.to(device, dtype=dtype)


def build_loss(args: argparse.Namespace, model: nn.Module, counts: list[int]) -> nn.Module:
    if args.stage == "router":
        return losses.RouterLoss(pos_weight=args.router_pos_weight)
    options = dict(args.loss_kwargs or {})
    try:
        return losses.build_loss(args.method, counts, num_experts=model.num_experts,
                                 num_copies=args.num_copies, **options)
    except TypeError as error:
        raise UserInputError(f"--loss-kwargs {options} do not fit --method {args.method}: {error}") from None


def build_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    """timm's optimizer factory; ``--opt-fused`` only when asked (not every optimizer takes ``fused``)."""
    fused = {"fused": True} if args.opt_fused else {}
    try:
        return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                   momentum=args.momentum, filter_bias_and_bn=args.wd_skip_bias_bn,
                                   foreach=args.opt_foreach, **fused)
    except (ValueError, AssertionError, TypeError, RuntimeError) as error:
        raise UserInputError(f"--opt {args.opt}: {error}") from None


def build_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """timm's scheduler factory (``None`` for ``--sched none``)."""
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=args.sched, num_epochs=args.epochs, decay_milestones=args.decay_milestones,
            decay_rate=args.decay_rate, warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr,
            min_lr=args.min_lr, step_on_epochs=not args.sched_on_updates, updates_per_epoch=steps_per_epoch)
    except (ValueError, AssertionError) as error:
        raise UserInputError(f"--sched {args.sched}: {error}") from None
    return scheduler


def resolve_precision(args: argparse.Namespace, device: torch.device) -> Precision:
    model_dtype = getattr(torch, args.model_dtype) if args.model_dtype else None
    if not args.amp:
        return Precision(device.type, model_dtype=model_dtype)
    if model_dtype not in (None, torch.float32):
        raise UserInputError(f"--amp autocasts float32 weights; it does not go with --model-dtype {args.model_dtype}")
    dtype = getattr(torch, args.amp_dtype) if args.amp_dtype else default_amp_dtype(device)
    scaler = NativeScaler(device=device.type) if dtype == torch.float16 and device.type == "cuda" else None
    return Precision(device.type, dtype, scaler)


def train_loader(args: argparse.Namespace, data: Data, ctx: DistContext):
    if args.stage == "router":  # RIDE stage 2 draws every class equally often
        base = ClassBalancedSampler(dataset_targets(data.train), seed=args.seed,
                                    num_replicas=ctx.world_size, rank=ctx.rank)
    elif ctx.distributed:
        base = DistributedSampler(data.train, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                  seed=args.seed)
    else:
        base = ShuffleSampler(len(data.train), seed=args.seed)
    if args.device_augment:
        return _device_loader(args, data, ctx, base)
    sampler = EpochSeededSampler(base, seed=args.seed, rank=ctx.rank)
    loader = create_loader(SeededDataset(data.train), batch_size=args.batch_size, sampler=sampler,
                           num_workers=args.workers, pin_memory=args.pin_mem and ctx.device.type == "cuda",
                           persistent_workers=args.workers > 0)
    loader.worker_init_fn = ignore_stop_signals
    return loader


def _device_loader(args: argparse.Namespace, data: Data, ctx: DistContext, sampler: Any) -> DeviceBatchLoader:
    """``--device-augment``: the training images on the device, augmented there in batches."""
    recipe = check_batch_recipe(data.info.get("train_transform"))
    train = data.train
    source, rows = (train.dataset, train.indices) if isinstance(train, LabelledSubset) else (train, None)
    images = getattr(source, "images", None)
    if images is None or data.img_size is None:
        raise UserInputError(f"--device-augment needs a small-image set decoded in memory "
                             f"({', '.join(SMALL_IMAGE_DATASETS)}); {data.info.get('name')} is read from files")
    rows = np.arange(len(source)) if rows is None else rows
    augment = BatchAugment(recipe, data.img_size)
    return DeviceBatchLoader(images, dataset_targets(source), rows, sampler, args.batch_size, augment,
                             ctx.device, seed=args.seed, rank=ctx.rank, num_copies=args.num_copies)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process.

    Ctrl-C (or a scheduler's SIGTERM to the process group) reaches the workers too; a worker that
    dies of it makes the main process fail mid-step. Ignored here, the main process finishes the
    step, keeps its checkpoint and shuts the workers down itself.
    """
    del worker_id
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def eval_loader(args: argparse.Namespace, dataset: Any, ctx: DistContext):
    loader = create_loader(dataset, batch_size=args.eval_batch_size, shuffle=False, num_workers=args.workers,
                           pin_memory=args.pin_mem and ctx.device.type == "cuda", persistent_workers=False)
    loader.worker_init_fn = ignore_stop_signals
    return loader


def common_steps(local_steps: int, ctx: DistContext) -> int:
    """Steps every rank can take: samplers may give ranks one batch more or less (they would hang)."""
    if not ctx.distributed:
        return local_steps
    steps = torch.tensor([local_steps], device=ctx.device)
    dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    return int(steps.item())


def output_dir_for(args: argparse.Namespace, name: str) -> Path:
    if args.experiment:
        return Path(args.output) / args.experiment
    if args.resume:
        return Path(args.resume).resolve().parent
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(args.output) / f"{stamp}-{args.method}-{args.stage}-{name}-{args.dataset}"

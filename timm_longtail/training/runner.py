"""``train.py``'s body: build everything from the arguments, check it, then run the epochs.

Order matters for users: every check that can fail on bad input (method, model, checkpoints,
class counts, teacher) runs before the output folder is created and before the first step, so a
wrong command costs seconds and leaves nothing behind.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import NativeScaler, random_seed
from timm.utils.summary import trim_summary, update_summary
from torch import nn
from torch.utils.data import DistributedSampler

from .. import losses
from .._format import percent
from ..checkpoint import (atomic_write, build_model_from_checkpoint, exclusive_lock, json_safe, load_checkpoint,
                          run_lineage, save_checkpoint, start_command, unwrap_model)
from ..data import (
    ClassBalancedSampler, MultiViewTransform, build_dataset, canonical_dataset_name, create_eval_transform,
    create_loader, create_train_transform,
)
from ..data.batch_augment import BatchAugment
from ..errors import OutputWriteError, UserInputError
from ..evaluation import default_amp_dtype
from .device_loader import DeviceBatchLoader
from .distributed import DistContext, cleanup_distributed, setup_distributed
from .validation import balanced_top1, evaluate_final
from .loop import Precision, StopFlag, train_one_epoch
from .recipe import MethodSpec, check_args, check_model, freeze_for_stage, resolve_drw_epoch
from .seeding import EpochSeededSampler, SeededDataset, ShuffleSampler
from .tasks import DistillationTask, ExpertsTask, RouterTask, StageTask
from .splits import LabelledSubset, class_count_list, dataset_targets, eval_cap, stratified_cap, stratified_holdout

__all__ = ["run", "SMALL_IMAGE_DATASETS"]

_logger = logging.getLogger("train")

SMALL_IMAGE_DATASETS = ("cifar10_lt", "cifar100_lt", "tiny_imagenet_lt", "demo")
_SEEDED_LONGTAIL = ("cifar10_lt", "cifar100_lt", "folder")  # datasets whose long-tailed subset is a seeded draw


def default_train_recipe(spec: MethodSpec, dataset: str) -> str:
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


@dataclass
class History:
    """What the loop remembers across epochs (saved in every checkpoint)."""

    best_metric: float | None = None
    best_epoch: int | None = None
    epoch_times: list[float] = field(default_factory=list)
    images_per_sec: list[float] = field(default_factory=list)


def _read_checkpoints(args: argparse.Namespace) -> Checkpoints:
    found = Checkpoints(
        resume=load_checkpoint(args.resume) if args.resume else None,
        initial=load_checkpoint(args.initial_checkpoint) if args.initial_checkpoint else None,
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


def _model_name(args: argparse.Namespace, found: Checkpoints) -> str:
    for ckpt in (found.resume, found.initial):
        if ckpt is not None:
            return str(ckpt.get("model_name"))
    return str(args.model)


def _build_data(args: argparse.Namespace, spec: MethodSpec) -> Data:
    name = canonical_dataset_name(args.dataset)
    recipe = args.train_transform or default_train_recipe(spec, name)
    if args.longtail_seed != 0 and name not in _SEEDED_LONGTAIL:
        raise UserInputError(f"--longtail-seed resamples the long-tailed draw of {', '.join(_SEEDED_LONGTAIL)}; "
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


def _set_transform(dataset: Any, transform: Any) -> None:
    target = dataset.dataset if isinstance(dataset, LabelledSubset) else dataset
    target.transform = transform


def _create_model(args: argparse.Namespace, name: str, found: Checkpoints,
                  num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The model and the keyword arguments that re-create it (recorded in every checkpoint)."""
    import timm

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
    import timm

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


def _build_teacher(found: Checkpoints, num_classes: int, device: torch.device) -> nn.Module | None:
    if found.teacher is None:
        return None
    teacher, ckpt = build_model_from_checkpoint(found.teacher)
    counts = ckpt.get("class_counts") or []
    if teacher.num_classes != num_classes or (counts and len(counts) != num_classes):
        raise UserInputError(f"--teacher has {teacher.num_classes} classes, the dataset {num_classes}")
    teacher.set_forward_mode("ensemble")
    teacher.eval()  # eval-mode BN (the reference leaves it in train mode; we do not)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher.to(device)


def _build_loss(args: argparse.Namespace, model: nn.Module, counts: list[int]) -> nn.Module:
    if args.stage == "router":
        return losses.RouterLoss(pos_weight=args.router_pos_weight)
    options = dict(args.loss_kwargs or {})
    try:
        return losses.build_loss(args.method, counts, num_experts=model.num_experts,
                                 num_copies=args.num_copies, **options)
    except TypeError as error:
        raise UserInputError(f"--loss-kwargs {options} do not fit --method {args.method}: {error}") from None


def _precision(args: argparse.Namespace, device: torch.device) -> Precision:
    if not args.amp:
        return Precision(device.type)
    dtype = getattr(torch, args.amp_dtype) if args.amp_dtype else default_amp_dtype(device)
    scaler = NativeScaler(device=device.type) if dtype == torch.float16 and device.type == "cuda" else None
    return Precision(device.type, dtype, scaler)


def _train_loader(args: argparse.Namespace, data: Data, ctx: DistContext):
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
    recipe = data.info.get("train_transform")
    if args.num_copies > 1:
        raise UserInputError("--device-augment makes one view per image: leave it off with --num-copies > 1")
    train = data.train
    source, rows = (train.dataset, train.indices) if isinstance(train, LabelledSubset) else (train, None)
    images = getattr(source, "images", None)
    if images is None or data.img_size is None:
        raise UserInputError(f"--device-augment needs a small-image set decoded in memory "
                             f"({', '.join(SMALL_IMAGE_DATASETS)}); {data.info.get('name')} is read from files")
    rows = np.arange(len(source)) if rows is None else rows
    augment = BatchAugment(recipe, data.img_size)
    return DeviceBatchLoader(images, dataset_targets(source), rows, sampler, args.batch_size, augment,
                             ctx.device, seed=args.seed, rank=ctx.rank)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process.

    Ctrl-C (or a scheduler's SIGTERM to the process group) reaches the workers too; a worker that
    dies of it makes the main process fail mid-step. Ignored here, the main process finishes the
    step, keeps its checkpoint and shuts the workers down itself.
    """
    del worker_id
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _eval_loader(args: argparse.Namespace, dataset: Any, ctx: DistContext):
    loader = create_loader(dataset, batch_size=args.eval_batch_size, shuffle=False, num_workers=args.workers,
                           pin_memory=args.pin_mem and ctx.device.type == "cuda", persistent_workers=False)
    loader.worker_init_fn = ignore_stop_signals
    return loader


def _common_steps(local_steps: int, ctx: DistContext) -> int:
    """Steps every rank can take: samplers may give ranks one batch more or less (they would hang)."""
    if not ctx.distributed:
        return local_steps
    import torch.distributed as dist

    steps = torch.tensor([local_steps], device=ctx.device)
    dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    return int(steps.item())


def _output_dir(args: argparse.Namespace, name: str) -> Path:
    if args.experiment:
        return Path(args.output) / args.experiment
    if args.resume:
        return Path(args.resume).resolve().parent
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(args.output) / f"{stamp}-{args.method}-{args.stage}-{name}-{args.dataset}"


class _Run:
    """One training run; ``execute`` returns the process exit code."""

    def __init__(self, args: argparse.Namespace, spec: MethodSpec, ctx: DistContext, command: str):
        self.args, self.spec, self.ctx, self.command = args, spec, ctx, command
        self.started = time.time()
        self.log_handler: logging.Handler | None = None

    def _keep_command_history(self) -> None:
        """``command`` is what reproduces the run: this process's command without ``--resume`` (a resume
        may extend ``--epochs``); ``command_history`` keeps every command that trained it, oldest first."""
        resume = self.found.resume
        earlier: list[str] = []
        if resume is not None:
            earlier = list(resume.get("command_history") or ([resume["command"]] if resume.get("command") else []))
        self.command_history = [*earlier, self.command]
        self.command = start_command(self.command)

    # ---- set-up: everything that can reject the input --------------------------------------
    def setup(self) -> None:
        args, ctx = self.args, self.ctx
        random_seed(args.seed, 0)  # same initial weights on every rank (DDP also broadcasts them)
        self.found = _read_checkpoints(args)
        self._keep_command_history()
        self.model_name = _model_name(args, self.found)
        self.data = _build_data(args, self.spec)
        num_classes = len(self.data.full_class_counts)
        model, self.model_kwargs = _create_model(args, self.model_name, self.found, num_classes)
        check_model(model, self.model_name, self.spec, args.stage)
        if args.stage == "router" and self.found.resume is None:
            stage1 = (self.found.initial.get("recipe") or {}).get("stage")
            if stage1 not in (None, "experts"):
                _logger.info("router stage starts from a '%s' checkpoint", stage1)
        freeze_for_stage(model, args.stage)
        model.set_forward_mode("ensemble")
        self.teacher = _build_teacher(self.found, num_classes, ctx.device)
        self.criterion = _build_loss(args, model, self.data.train_class_counts).to(ctx.device)
        self.distillation = None
        if self.teacher is not None:
            from ..losses import DistillationLoss

            self.distillation = DistillationLoss(temperature=args.distill_temperature, factor=args.distill_factor,
                                                 on=args.distill_on).to(ctx.device)
        eval_tf = create_eval_transform(model, img_size=self.data.img_size)
        for dataset in (self.data.test, self.data.val):
            if dataset is not None:
                _set_transform(dataset, eval_tf)
        model.to(ctx.device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        model.set_grad_checkpointing(args.grad_checkpointing)
        if ctx.distributed and args.sync_bn and args.stage == "experts":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.drw_epoch = resolve_drw_epoch(args, self.spec)

        self.train_loader = _train_loader(args, self.data, ctx)
        self.steps_per_epoch = _common_steps(len(self.train_loader), ctx)
        if args.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, args.max_steps_per_epoch)
        try:
            fused = {"fused": True} if args.opt_fused else {}  # absent unless asked: not every optimizer takes it
            self.optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                                 momentum=args.momentum, filter_bias_and_bn=args.wd_skip_bias_bn,
                                                 foreach=args.opt_foreach, **fused)
        except (ValueError, AssertionError, TypeError, RuntimeError) as error:
            raise UserInputError(f"--opt {args.opt}: {error}") from None
        try:
            self.scheduler, _ = create_scheduler_v2(
                self.optimizer, sched=args.sched, num_epochs=args.epochs, decay_milestones=args.decay_milestones,
                decay_rate=args.decay_rate, warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr,
                min_lr=args.min_lr, step_on_epochs=not args.sched_on_updates,
                updates_per_epoch=self.steps_per_epoch)
        except (ValueError, AssertionError) as error:
            raise UserInputError(f"--sched {args.sched}: {error}") from None
        self.precision = _precision(args, ctx.device)
        self.model_ema = None
        if args.model_ema:
            from timm.utils import ModelEmaV3

            self.model_ema = ModelEmaV3(model, decay=args.model_ema_decay)
        self.start_epoch, self.num_updates, self.history = 0, 0, History()
        if self.found.resume is not None:
            self._restore(self.found.resume)
        self.task = self._task(model)
        self.output_dir = _output_dir(args, self.model_name)

    def _task(self, model: nn.Module) -> StageTask:
        """The stage's timm task, compiled (``--torchcompile``) and then wrapped for DDP, in timm's order."""
        args, ctx = self.args, self.ctx
        if args.stage == "router":
            task: StageTask = RouterTask(model, self.criterion, self.precision, ctx.device)
        elif self.teacher is not None:
            task = DistillationTask(model, self.criterion, self.teacher, self.distillation, self.precision, ctx.device)
        else:
            task = ExpertsTask(model, self.criterion, self.precision, ctx.device)
        if args.torchcompile:
            try:
                task.compile(backend=args.torchcompile, mode=args.torchcompile_mode)
            except RuntimeError as error:  # an unknown backend or mode
                raise UserInputError(f"--torchcompile {args.torchcompile}: {error}") from None
        if ctx.distributed:
            task.prepare_distributed(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        return task

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("scheduler") is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.precision.scaler is not None and ckpt.get("scaler") is not None:
                self.precision.scaler.load_state_dict(ckpt["scaler"])
            if self.model_ema is not None and ckpt.get("state_dict_ema") is not None:
                self.model_ema.module.load_state_dict(ckpt["state_dict_ema"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise UserInputError(f"--resume {self.args.resume}: training state does not fit this run "
                                 f"({str(error).splitlines()[0]})") from None
        self.start_epoch = int(ckpt.get("epoch", 0))
        self.num_updates = int(ckpt.get("num_updates", 0))
        state = ckpt.get("history") or {}
        self.history = History(best_metric=state.get("best_metric"), best_epoch=state.get("best_epoch"),
                               epoch_times=list(state.get("epoch_times", [])),
                               images_per_sec=list(state.get("images_per_sec", [])))

    # ---- saving ---------------------------------------------------------------------------
    def _recipe(self) -> dict[str, Any]:
        recipe = {k: v for k, v in vars(self.args).items()}
        recipe["drw_epoch_resolved"] = self.drw_epoch
        return recipe

    def _save(self, path: Path, epoch: int) -> None:
        extra: dict[str, Any] = dict(
            epoch=epoch, num_updates=self.num_updates, recipe=self._recipe(), dataset=self.data.info,
            lineage=run_lineage(self.found.resume, self.found.initial, self.found.teacher),
            train_class_counts=self.data.train_class_counts, command=self.command,
            command_history=self.command_history, seed=self.args.seed, optimizer=self.optimizer.state_dict(),
            scheduler=None if self.scheduler is None else self.scheduler.state_dict(),
            scaler=None if self.precision.scaler is None else self.precision.scaler.state_dict(),
            reweighting=self._reweighting(epoch - 1),
            history=dict(best_metric=self.history.best_metric, best_epoch=self.history.best_epoch,
                         epoch_times=self.history.epoch_times, images_per_sec=self.history.images_per_sec),
        )
        if self.model_ema is not None:
            extra["state_dict_ema"] = {k: v.detach().cpu() for k, v in self.model_ema.module.state_dict().items()}
        try:
            save_checkpoint(path, unwrap_model(self.model), model_name=self.model_name,
                            class_counts=self.data.full_class_counts, class_names=self.data.class_names,
                            model_kwargs=self.model_kwargs, extra=extra)
        except OutputWriteError as error:
            last = self.output_dir / "last.pth"
            resume = f"; free space, then resume with --resume {last}" if last.is_file() else ""
            raise OutputWriteError(f"{error}{resume}") from None

    def _reweighting(self, epoch: int) -> bool:
        return self.drw_epoch is not None and epoch >= self.drw_epoch

    # ---- the epochs -------------------------------------------------------------------------
    def execute(self) -> int:
        self.setup()
        if not self.ctx.is_primary:
            return self._train()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        busy = (f"{self.output_dir} is in use by another training run: wait for it to finish, or pass another "
                f"--experiment/--output")
        with exclusive_lock(self.output_dir, busy):  # two runs would interleave their checkpoints and logs
            return self._train()

    def _train(self) -> int:
        args, ctx = self.args, self.ctx
        summary_path = self.output_dir / "summary.csv"
        if ctx.is_primary:
            self.log_handler = _add_file_log(self.output_dir / "log.txt")
            (self.output_dir / "args.yaml").write_text(_yaml_dump(vars(args)))
            trim_summary(str(summary_path), self.start_epoch)
            _logger.info("output: %s", self.output_dir)
            _logger.info("model %s (%d experts), method %s, stage %s, %d training images, %d steps/epoch",
                         self.model_name, self.model.num_experts, args.method, args.stage, len(self.data.train),
                         self.steps_per_epoch)
        if self.scheduler is not None and self.start_epoch > 0:
            if args.sched_on_updates:
                self.scheduler.step_update(self.num_updates)
            else:
                self.scheduler.step(self.start_epoch)
        stop = StopFlag().install()
        try:
            for epoch in range(self.start_epoch, args.epochs):
                random_seed(args.seed + 1_000 * (epoch + 1), ctx.rank)
                self.train_loader.sampler.set_epoch(epoch)
                self.criterion.set_reweighting(self._reweighting(epoch))
                result = train_one_epoch(
                    epoch=epoch, task=self.task, loader=self.train_loader,
                    optimizer=self.optimizer, precision=self.precision, ctx=ctx, stop=stop,
                    scheduler=self.scheduler, sched_on_updates=args.sched_on_updates,
                    num_updates=self.num_updates, clip_grad=args.clip_grad, channels_last=args.channels_last,
                    max_steps=self.steps_per_epoch, log_interval=args.log_interval,
                    model_ema=self.model_ema, steps_per_epoch=self.steps_per_epoch)
                if result.interrupted:
                    return self._interrupted(stop, epoch)
                self.num_updates = result.num_updates
                if self.scheduler is not None and not args.sched_on_updates:
                    self.scheduler.step(epoch + 1)
                if args.stage == "router":
                    self.model.mark_router_trained()
                self._end_epoch(epoch, result.metrics, summary_path)
                if stop.agreed(ctx):
                    return self._interrupted(stop, epoch + 1)
        finally:
            stop.restore()
        return self._finish()

    def _end_epoch(self, epoch: int, metrics: dict[str, float], summary_path: Path) -> None:
        args, ctx = self.args, self.ctx
        self.history.epoch_times.append(metrics["epoch_time_s"])
        self.history.images_per_sec.append(metrics["images_per_sec"])
        val_metrics: dict[str, float] = {}
        improved = False
        if ctx.is_primary and self.data.val is not None:
            val_metrics = self._validate()
            score = val_metrics["top1_balanced"]
            if self.history.best_metric is None or score > self.history.best_metric:
                self.history.best_metric, self.history.best_epoch, improved = score, epoch, True
        if ctx.is_primary:
            self._save(self.output_dir / "last.pth", epoch + 1)
            if improved and args.select_by == "val":
                self._save(self.output_dir / "best.pth", epoch + 1)
            row = dict(metrics)
            row["reweighting"] = int(self._reweighting(epoch))
            update_summary(epoch, row, val_metrics, str(summary_path), lr=None)
            shown = f"  val balanced top-1 {val_metrics['top1_balanced']:.2f}" if val_metrics else ""
            _logger.info("epoch %d done: loss %.4f  %.1f s  %.1f img/s%s", epoch, metrics["loss"],
                         metrics["epoch_time_s"], metrics["images_per_sec"], shown)
        ctx.barrier()

    def _validate(self) -> dict[str, float]:
        model = self.model
        mode = "routed" if self.args.stage == "router" else "ensemble"
        loader = _eval_loader(self.args, self.data.val, self.ctx)
        return {"top1_balanced": balanced_top1(model, loader, mode, self.data.full_class_counts, self.ctx.device,
                                               self.args.channels_last, self.precision)}

    def _interrupted(self, stop: StopFlag, completed_epochs: int) -> int:
        last = self.output_dir / "last.pth"
        if self.ctx.is_primary:
            if last.is_file():
                _logger.warning("stopped; resume with: --resume %s (%d complete epochs)", last, completed_epochs)
            else:
                _logger.warning("stopped before the first epoch completed: no checkpoint was written")
        return 128 + int(stop.signum or 2)

    def _finish(self) -> int:
        args, ctx = self.args, self.ctx
        if not ctx.is_primary:
            ctx.barrier()
            return 0
        selected = "last"
        path = self.output_dir / "last.pth"
        if args.select_by == "val" and (self.output_dir / "best.pth").is_file():
            selected, path = "best", self.output_dir / "best.pth"
        result: dict[str, Any] = dict(
            command=self.command, command_history=self.command_history, seed=args.seed, model=self.model_name,
            method=args.method, stage=args.stage,
            dataset=self.data.info, selected_checkpoint=selected, checkpoint=str(path),
            selected_epoch=(self.history.best_epoch if selected == "best" else len(self.history.epoch_times) - 1),
            selection_rule=("best held-out validation balanced top-1 (split from the training set)"
                            if selected == "best" else "last epoch"),
            epochs=args.epochs, drw_epoch=self.drw_epoch,
            epoch_time_s=_mean(self.history.epoch_times),
            train_images_per_sec=_mean(self.history.images_per_sec),
            train_time_s=float(sum(self.history.epoch_times)),
            lineage=run_lineage(self.found.resume, self.found.initial, self.found.teacher),
            recipe=self._recipe(),  # with it, the card can be rendered again from the results alone
        )
        if self.history.best_metric is not None:
            result["val_top1_balanced_best"] = self.history.best_metric
        if not args.no_final_eval:
            model = self.model
            if selected == "best":
                model, _ = build_model_from_checkpoint(path)
                model.to(self.ctx.device)
            loader = _eval_loader(args, self.data.test, ctx)
            context = dict(model=self.model_name, checkpoint=str(path), dataset=self.data.info["name"],
                           split=args.test_split, imbalance_factor=self.data.info.get("imbalance_factor"))
            result.update(evaluate_final(model, loader, self.data.full_class_counts, args.eval_modes,
                                         self.ctx.device, self.data.img_size, args.channels_last, self.precision,
                                         context))
            if self.model_ema is not None:
                result["ema"] = evaluate_final(self.model_ema.module, loader, self.data.full_class_counts,
                                               args.eval_modes, self.ctx.device, self.data.img_size,
                                               args.channels_last, self.precision, dict(context, ema=True))
        result["wall_time_s"] = time.time() - self.started
        _atomic_json(self.output_dir / "final.json", result)
        _logger.info("final: %s", _headline(result))
        ctx.barrier()
        return 0


def _headline(result: dict[str, Any]) -> str:
    modes = result.get("modes") or {}
    parts = []
    for mode, metrics in modes.items():
        shown = {key: percent(metrics.get(key)) for key in ("top1", "top1_many", "top1_medium", "top1_few")}
        hist = metrics.get("experts_used_hist")
        parts.append(f"{mode} top1 {shown['top1']} (many {shown['top1_many']} / medium {shown['top1_medium']} / "
                     f"few {shown['top1_few']})" + (f" experts used {hist}" if hist else ""))
    return "; ".join(parts) or "no evaluation"


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _atomic_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(json_safe(payload), indent=2, allow_nan=False)

    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(text + "\n")

    atomic_write(path, write)


def _yaml_dump(values: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump({k: v for k, v in values.items()}, sort_keys=False)


def _add_file_log(path: Path) -> logging.Handler:
    """Copy the run's log lines into its folder (removed again when the run ends)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def run(args: argparse.Namespace, command: str = "") -> int:
    """Train as ``args`` say; returns the exit code (0 done, 128+signal when stopped)."""
    _logger.setLevel(logging.INFO)  # progress lines reach log.txt whatever the root logger's level
    spec = check_args(args)
    ctx = setup_distributed(args.device)
    job = _Run(args, spec, ctx, command)
    try:
        return job.execute()
    finally:
        if job.log_handler is not None:
            logging.getLogger().removeHandler(job.log_handler)
            job.log_handler.close()
        cleanup_distributed(ctx)


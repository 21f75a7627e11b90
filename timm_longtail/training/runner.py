"""``train.py``'s body: build the run's pieces (``assembly``), check them, then run the epochs.

Order matters for users: every check that can fail on bad input (method, model, checkpoints,
class counts, teacher) runs before the output folder is created and before the first step, so a
wrong command costs seconds and leaves nothing behind.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import random_seed
from timm.utils.summary import trim_summary, update_summary
from torch import nn

from .._format import percent
from ..checkpoint import (
    atomic_write, build_model_from_checkpoint, exclusive_lock, json_safe, run_lineage, save_checkpoint, start_command,
    unwrap_model,
)
from ..data import create_eval_transform
from ..errors import OutputWriteError, UserInputError
from .assembly import (
    build_data, build_loss, build_teacher, common_steps, create_model, eval_loader, output_dir_for, read_checkpoints,
    resolve_model_name, resolve_precision, set_transform, train_loader,
)
from .distributed import DistContext, cleanup_distributed, setup_distributed
from .loop import StopFlag, train_one_epoch
from .methods import MethodSpec, check_args, check_model, freeze_for_stage, resolve_drw_epoch
from .tasks import DistillationTask, ExpertsTask, RouterTask, StageTask
from .validation import balanced_top1, evaluate_final

__all__ = ["run"]

_logger = logging.getLogger("train")

@dataclass
class History:
    """What the loop remembers across epochs (saved in every checkpoint)."""

    best_metric: float | None = None
    best_epoch: int | None = None
    epoch_times: list[float] = field(default_factory=list)
    images_per_sec: list[float] = field(default_factory=list)


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
        self.found = read_checkpoints(args)
        self._keep_command_history()
        self.model_name = resolve_model_name(args, self.found)
        self.data = build_data(args, self.spec)
        num_classes = len(self.data.full_class_counts)
        model, self.model_kwargs = create_model(args, self.model_name, self.found, num_classes)
        check_model(model, self.model_name, self.spec, args.stage)
        if args.stage == "router" and self.found.resume is None:
            stage1 = (self.found.initial.get("recipe") or {}).get("stage")
            if stage1 not in (None, "experts"):
                _logger.info("router stage starts from a '%s' checkpoint", stage1)
        freeze_for_stage(model, args.stage)
        model.set_forward_mode("ensemble")
        self.teacher = build_teacher(self.found, num_classes, ctx.device)
        self.criterion = build_loss(args, model, self.data.train_class_counts).to(ctx.device)
        self.distillation = None
        if self.teacher is not None:
            from ..losses import DistillationLoss

            self.distillation = DistillationLoss(temperature=args.distill_temperature, factor=args.distill_factor,
                                                 on=args.distill_on).to(ctx.device)
        eval_tf = create_eval_transform(model, img_size=self.data.img_size)
        for dataset in (self.data.test, self.data.val):
            if dataset is not None:
                set_transform(dataset, eval_tf)
        model.to(ctx.device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        model.set_grad_checkpointing(args.grad_checkpointing)
        if ctx.distributed and args.sync_bn and args.stage == "experts":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.drw_epoch = resolve_drw_epoch(args, self.spec)

        self.train_loader = train_loader(args, self.data, ctx)
        self.steps_per_epoch = common_steps(len(self.train_loader), ctx)
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
        self.precision = resolve_precision(args, ctx.device)
        self.model_ema = None
        if args.model_ema:
            from timm.utils import ModelEmaV3

            self.model_ema = ModelEmaV3(model, decay=args.model_ema_decay)
        self.start_epoch, self.num_updates, self.history = 0, 0, History()
        if self.found.resume is not None:
            self._restore(self.found.resume)
        self.task = self._task(model)
        self.output_dir = output_dir_for(args, self.model_name)

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
        loader = eval_loader(self.args, self.data.val, self.ctx)
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
            loader = eval_loader(args, self.data.test, ctx)
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


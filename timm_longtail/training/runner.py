"""``train.py``'s body: build the run's pieces (``assembly``), check them, then run the epochs.

Order matters for users: every check that can fail on bad input (method, model, checkpoints,
class counts, teacher, a resume's recipe) runs before the output folder is created and before the
first step, so a wrong command costs seconds and leaves nothing behind. A run never writes into a
folder that holds another run, and every file it writes is whole or absent: ``args.yaml``,
``summary.csv``, checkpoints and ``final.json`` by rename, ``log.txt`` one whole line at a time.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from timm.utils import ModelEmaV3, random_seed
from timm.utils.summary import trim_summary, update_summary
from torch import nn

from ..checkpoint import build_model_from_checkpoint, command_history, lineage_entry, load_checkpoint, run_lineage
from ..data import create_eval_transform
from ..errors import OutputWriteError, UserInputError
from ..files import apply_umask, atomic_write, atomic_write_json, atomic_write_text, exclusive_lock
from ..losses import DistillationLoss
from .assembly import (
    build_data, build_loss, build_optimizer, build_scheduler, build_teacher, common_steps, create_model, eval_loader,
    output_dir_for, read_checkpoints, resolve_model_name, resolve_precision, set_transform, train_loader,
)
from .config import continue_recipe, known_keys
from .distributed import DistContext, cleanup_distributed, setup_distributed
from .loggers import ExperimentLoggers, require_logger_packages
from .loop import StopFlag, train_one_epoch
from .saver import LongTailCheckpointSaver
from .methods import MethodSpec, check_args, check_model, freeze_for_stage, resolve_drw_epoch
from .tasks import build_task
from .validation import balanced_top1, evaluate_final, headline

__all__ = ["RUN_FILES", "run"]

_logger = logging.getLogger("train")

RUN_FILES = ("last.pth", "best.pth", "final.json", "summary.csv")
"""What makes a folder hold a run: a new run never writes there (one that stopped before its first
checkpoint left only ``args.yaml`` and ``log.txt``: nothing to resume, so the folder may be started again)."""


@dataclass
class History:
    """Epoch times and speeds across the run's segments (saved in every checkpoint; the best held-out
    score is the saver's)."""

    epoch_times: list[float] = field(default_factory=list)
    images_per_sec: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | None]:
        """Mean epoch time and speed, and the summed training time, over every epoch of every segment."""
        def mean(values: list[float]) -> float | None:
            return float(sum(values) / len(values)) if values else None

        return dict(epoch_time_s=mean(self.epoch_times), train_images_per_sec=mean(self.images_per_sec),
                    train_time_s=float(sum(self.epoch_times)))


class _Run:
    """One training run; ``execute`` returns the process exit code.

    ``resumed`` is the ``--resume`` checkpoint already read (its recipe is in ``args``: :func:`resume_recipe`)
    and ``recipe_changes`` the recipe settings given anew with other values, ``{name: (recorded, now)}``.
    """

    def __init__(self, args: argparse.Namespace, spec: MethodSpec, ctx: DistContext, command: str,
                 resumed: dict[str, Any] | None = None, recipe_changes: Mapping[str, tuple[Any, Any]] | None = None):
        self.args, self.spec, self.ctx, self.command = args, spec, ctx, command
        self.resumed, self.recipe_changes = resumed, dict(recipe_changes or {})
        self.started = time.time()
        self.log_handler: logging.Handler | None = None
        self.loggers = ExperimentLoggers()  # --log-wandb / --log-tensorboard, opened by the primary process

    # ---- set-up: everything that can reject the input --------------------------------------
    def setup(self) -> None:
        args, ctx = self.args, self.ctx
        random_seed(args.seed, 0)  # same initial weights on every rank (DDP also broadcasts them)
        self.found = read_checkpoints(args, self.resumed)
        self._check_recipe_changes()
        self.command, self.command_history = command_history(self.found.resume, self.command,
                                                             recipe_changed=bool(self.recipe_changes))
        self.lineage = run_lineage(self.found.resume, self.found.initial, self.found.teacher)
        if self.recipe_changes:  # the segment before the change, with the recipe it trained with
            changed = {name: dict(checkpoint=old, now=new) for name, (old, new) in self.recipe_changes.items()}
            self.lineage.append(dict(lineage_entry(self.found.resume, "resumed"), changed=changed))
        self.model_name = resolve_model_name(args, self.found)
        self.data = build_data(args, self.spec)
        num_classes = len(self.data.full_class_counts)
        recorded_counts = None if self.found.resume is None else self.found.resume.get("class_counts")
        if recorded_counts and list(recorded_counts) != list(self.data.full_class_counts):
            raise UserInputError(f"--resume {args.resume} was trained on other data (training images per class "
                                 f"{list(recorded_counts)[:5]}...) than --data-dir {args.data_dir} holds "
                                 f"({self.data.full_class_counts[:5]}...)")
        model, self.model_kwargs = create_model(args, self.model_name, self.found, num_classes)
        check_model(model, self.model_name, self.spec, args.stage)
        if args.stage == "router" and self.found.resume is None:
            stage1 = (self.found.initial.get("recipe") or {}).get("stage")
            if stage1 not in (None, "experts"):
                _logger.info("router stage starts from a '%s' checkpoint", stage1)
        freeze_for_stage(model, args.stage)
        model.set_forward_mode("ensemble")
        self.precision = resolve_precision(args, ctx.device)
        self.teacher = build_teacher(self.found, num_classes, ctx.device, args.teacher_bn, self.precision.model_dtype)
        self.criterion = build_loss(args, model, self.data.train_class_counts).to(ctx.device)
        self.distillation = None if self.teacher is None else DistillationLoss(
            temperature=args.distill_temperature, factor=args.distill_factor, on=args.distill_on).to(ctx.device)
        eval_tf = create_eval_transform(model, img_size=self.data.img_size)
        for dataset in (self.data.test, self.data.val):
            if dataset is not None:
                set_transform(dataset, eval_tf)
        model.to(ctx.device, dtype=self.precision.model_dtype)
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
        self.optimizer = build_optimizer(args, model)
        self.scheduler = build_scheduler(args, self.optimizer, self.steps_per_epoch)
        self.model_ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None
        self.output_dir = output_dir_for(args, self.model_name)
        self.saver = LongTailCheckpointSaver(
            model, self.optimizer, self.output_dir, model_name=self.model_name,
            class_counts=self.data.full_class_counts, class_names=self.data.class_names,
            model_kwargs=self.model_kwargs, scheduler=self.scheduler, amp_scaler=self.precision.scaler,
            model_ema=self.model_ema, keep_best=args.select_by == "val")
        self.start_epoch, self.num_updates, self.history = 0, 0, History()
        if self.found.resume is not None:
            self._restore(self.found.resume)
        self.task = build_task(args.stage, model, self.criterion, self.precision, ctx.device, teacher=self.teacher,
                               distillation=self.distillation, compile_backend=args.torchcompile,
                               compile_mode=args.torchcompile_mode, distributed=ctx.distributed)

    def _check_recipe_changes(self) -> None:
        """A resume continues the recorded recipe: flags that change it need ``--resume-changes-recipe``."""
        if not self.recipe_changes or self.args.resume_changes_recipe:
            return
        listed = ", ".join(f"--{name.replace('_', '-')} {_shown(new)} (checkpoint: {_shown(old)})"
                           for name, (old, new) in self.recipe_changes.items())
        raise UserInputError(f"--resume {self.args.resume} continues the recipe it records, and these flags change "
                             f"it: {listed}; drop them to continue as recorded, or pass --resume-changes-recipe")

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.saver.restore(ckpt, source=f"--resume {self.args.resume}")
        self.start_epoch = int(ckpt.get("epoch", 0))
        self.num_updates = int(ckpt.get("num_updates", 0))
        state = ckpt.get("history") or {}
        self.history = History(epoch_times=list(state.get("epoch_times", [])),
                               images_per_sec=list(state.get("images_per_sec", [])))

    # ---- saving ---------------------------------------------------------------------------
    def _recipe(self) -> dict[str, Any]:
        recipe = {k: v for k, v in vars(self.args).items()}
        recipe["drw_epoch_resolved"] = self.drw_epoch
        return recipe

    def _training_state(self, epoch: int) -> dict[str, Any]:
        """What each checkpoint holds besides the model (``epoch`` counts completed epochs)."""
        best_epoch = None if self.saver.best_epoch is None else self.saver.best_epoch - 1
        return dict(
            epoch=epoch, num_updates=self.num_updates, recipe=self._recipe(), dataset=self.data.info,
            lineage=self.lineage, train_class_counts=self.data.train_class_counts, command=self.command,
            command_history=self.command_history, seed=self.args.seed, reweighting=self._reweighting(epoch - 1),
            history=dict(best_metric=self.saver.best_metric, best_epoch=best_epoch,  # 0-based, as before the saver
                         epoch_times=self.history.epoch_times, images_per_sec=self.history.images_per_sec),
        )

    def _reweighting(self, epoch: int) -> bool:
        return self.drw_epoch is not None and epoch >= self.drw_epoch

    # ---- the epochs -------------------------------------------------------------------------
    def execute(self) -> int:
        self.setup()
        if not self.ctx.is_primary:
            return self._train()
        created = not self.output_dir.exists()
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputWriteError(f"could not create {self.output_dir} ({error.strerror or error})") from None
        busy = (f"{self.output_dir} is in use by another training run: wait for it to finish, or pass another "
                f"--experiment/--output")
        try:
            with exclusive_lock(self.output_dir, busy):  # two runs would interleave their checkpoints and logs
                self._refuse_another_run()
                return self._train()
        except OutputWriteError as error:  # a full disk: what was written stays whole; say how to go on
            if self.saver.last_path.is_file():
                raise OutputWriteError(f"{error}; free space, then resume with: {self.resume_command()}") from None
            raise
        finally:
            if created:  # a run that failed before writing anything leaves no folder behind
                with contextlib.suppress(OSError):
                    self.output_dir.rmdir()

    def _refuse_another_run(self) -> None:
        """Never overwrite a run: only a resume of this folder's own checkpoint writes into a folder holding one."""
        held = [name for name in RUN_FILES if (self.output_dir / name).exists()]
        resuming_here = self.args.resume and Path(self.args.resume).resolve().parent == self.output_dir.resolve()
        if held and not resuming_here:
            raise UserInputError(
                f"{self.output_dir} already holds a run ({', '.join(held)}): continue it with --resume "
                f"{self.output_dir / 'last.pth'}, or start a new run with another --experiment")

    def resume_command(self) -> str:
        """The command that continues this run exactly: its checkpoint records every setting."""
        launcher = ["torchrun", "--nproc_per_node", str(self.ctx.world_size)] if self.ctx.distributed else ["python"]
        return shlex.join([*launcher, "train.py", "--resume", os.path.abspath(self.saver.last_path)])

    def _run_name(self) -> str:
        """The run folder under ``--output`` (``main_job/experts``), or its own name when it lies elsewhere."""
        try:
            return self.output_dir.resolve().relative_to(Path(self.args.output).resolve()).as_posix()
        except ValueError:
            return self.output_dir.name

    def _train(self) -> int:
        if self.ctx.is_primary:  # first: a W&B run that cannot start leaves the folder as it was
            self.loggers = ExperimentLoggers.open(self.args, self.output_dir, self._run_name(), self._recipe(),
                                                  self.start_epoch)
        status = 1  # an exception marks the W&B run failed
        try:
            status = self._epochs()
        finally:
            self.loggers.close(status)
        return status

    def _epochs(self) -> int:
        args, ctx = self.args, self.ctx
        summary_path = self.output_dir / "summary.csv"
        if ctx.is_primary:
            atomic_write_text(self.output_dir / "args.yaml", yaml.safe_dump(vars(args), sort_keys=False))
            self.log_handler = _add_file_log(self.output_dir / "log.txt")
            if summary_path.is_file():  # a resume drops the rows of epochs it trains again
                _rewrite(summary_path, lambda tmp: trim_summary(tmp, self.start_epoch))
            _logger.info("output: %s", self.output_dir)
            _logger.info("model %s (%d experts), method %s, stage %s, %d training images, %d steps/epoch",
                         self.model_name, self.model.num_experts, args.method, args.stage, len(self.data.train),
                         self.steps_per_epoch)
            for name, (old, new) in self.recipe_changes.items():
                _logger.warning("--resume-changes-recipe: %s %s -> %s from epoch %d on", name, _shown(old),
                                _shown(new), self.start_epoch)
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
        ctx = self.ctx
        self.history.epoch_times.append(metrics["epoch_time_s"])
        self.history.images_per_sec.append(metrics["images_per_sec"])
        val_metrics: dict[str, float] = {}
        if ctx.is_primary:
            if self.data.val is not None:
                val_metrics = self._validate()
            self.saver.save_checkpoint(epoch + 1, val_metrics.get("top1_balanced"),
                                       state=self._training_state(epoch + 1))
            row = dict(metrics)
            row["reweighting"] = int(self._reweighting(epoch))
            _rewrite(summary_path, lambda tmp: update_summary(epoch, row, val_metrics, tmp, lr=None))
            self.loggers.log_epoch(epoch, row, val_metrics)
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
                _logger.warning("stopped after %d complete epochs; resume with: %s", completed_epochs,
                                self.resume_command())
            else:
                _logger.warning("stopped before the first epoch completed: no checkpoint was written")
        self.ctx.barrier()  # torchrun ends every rank once one exits: none leaves before rank 0 is done
        return 128 + int(stop.signum or 2)

    def _finish(self) -> int:
        args, ctx = self.args, self.ctx
        if not ctx.is_primary:
            ctx.barrier()
            return 0
        selected, path = "last", self.saver.last_path
        if args.select_by == "val" and self.saver.best_path.is_file():
            selected, path = "best", self.saver.best_path
        result: dict[str, Any] = dict(
            command=self.command, command_history=self.command_history, seed=args.seed, model=self.model_name,
            method=args.method, stage=args.stage,
            dataset=self.data.info, selected_checkpoint=selected, checkpoint=str(path),
            selected_epoch=(self.saver.best_epoch - 1 if selected == "best" else len(self.history.epoch_times) - 1),
            selection_rule=("best held-out validation balanced top-1 (split from the training set)"
                            if selected == "best" else "last epoch"),
            epochs=args.epochs, drw_epoch=self.drw_epoch, **self.history.summary(),
            lineage=self.lineage,
            recipe=self._recipe(),  # with it, the card can be rendered again from the results alone
        )
        if self.saver.best_metric is not None:
            result["val_top1_balanced_best"] = self.saver.best_metric
        if not args.no_final_eval:
            model = self.model
            if selected == "best":
                model, _ = build_model_from_checkpoint(path)
                model.to(self.ctx.device, dtype=self.precision.model_dtype)
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
        self.loggers.log_final(result, epoch=args.epochs - 1)
        result["wall_time_s"] = time.time() - self.started
        atomic_write_json(self.output_dir / "final.json", result)
        _logger.info("final: %s", headline(result))
        ctx.barrier()
        return 0


def _shown(value: Any) -> str:
    """A setting as a user would type it (lists space-separated, as the flag takes them)."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


def _rewrite(path: Path, update: Any) -> None:
    """Change ``path`` (timm's summary helpers write in place) on a copy, renamed over it once whole."""
    def write(tmp: str) -> None:
        if path.is_file():
            shutil.copyfile(path, tmp)
        update(tmp)
        apply_umask(tmp)

    atomic_write(path, write)


class _LineAppendHandler(logging.Handler):
    """``log.txt``: each record appended as one whole line (``O_APPEND``, unbuffered), on disk as it is logged.

    Ours, not ``logging.FileHandler``: that one writes through a buffered stream (a full disk leaves half a
    line) and reports a failed write as a traceback on stderr, then carries on. Here the half line is cut
    off again and the failure is an :class:`OutputWriteError` (one ``error:`` line, exit status 1). The file
    is created with its first line, so a run that writes none leaves none.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._fd: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        line = (self.format(record) + "\n").encode("utf-8")
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            size = os.fstat(self._fd).st_size
            try:
                rest = memoryview(line)
                while rest:  # a short write is followed by one that fails with the reason (ENOSPC, EFBIG)
                    written = os.write(self._fd, rest)
                    if written == 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    rest = rest[written:]
            except OSError:
                os.ftruncate(self._fd, size)  # no half line
                if size == 0:  # nor an empty file
                    os.close(self._fd)
                    self._fd = None
                    os.unlink(self.path)
                raise
        except OSError as error:
            raise OutputWriteError(f"could not append to {self.path} ({error.strerror or error}): "
                                   f"its earlier lines are kept") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


def _add_file_log(path: Path) -> logging.Handler:
    """Copy the run's log lines into its folder (removed again when the run ends)."""
    handler = _LineAppendHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def resume_recipe(args: argparse.Namespace, given: frozenset[str] | None = None,
                  ) -> tuple[dict[str, Any] | None, dict[str, tuple[Any, Any]]]:
    """(the ``--resume`` checkpoint, the recipe settings given anew with other values): ``args`` takes the
    checkpoint's recorded value of every setting not ``given`` (:func:`~.config.continue_recipe`); ``given``
    None means every setting (a caller that built ``args`` itself)."""
    if args.resume_changes_recipe and not args.resume:
        raise UserInputError("--resume-changes-recipe goes with --resume <checkpoint>")
    if not args.resume:
        return None, {}
    checkpoint = load_checkpoint(args.resume)
    given = frozenset(known_keys()) if given is None else given
    return checkpoint, continue_recipe(args, given, checkpoint.get("recipe") or {})


def run(args: argparse.Namespace, command: str = "", given: frozenset[str] | None = None) -> int:
    """Train as ``args`` say; returns the exit code (0 done, 128+signal when stopped). ``given``: the
    settings the command line set (:func:`~.config.given_settings`); on ``--resume`` the others are the
    checkpoint's."""
    _logger.setLevel(logging.INFO)  # progress lines reach log.txt whatever the root logger's level
    resumed, recipe_changes = resume_recipe(args, given)
    spec = check_args(args)
    require_logger_packages(args)
    ctx = setup_distributed(args.device)
    job = _Run(args, spec, ctx, command, resumed, recipe_changes)
    try:
        return job.execute()
    finally:
        if job.log_handler is not None:
            logging.getLogger().removeHandler(job.log_handler)
            job.log_handler.close()
        cleanup_distributed(ctx)


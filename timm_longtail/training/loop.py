"""The training loop: one epoch of steps, method-agnostic.

A stage is a timm task (``training.tasks``): ``task(images, target)`` returns the loss and its
logged terms. The loop owns what every stage shares: the optimizer step, gradient scaling and
clipping, EMA, the scheduler per update, device-side sums of the terms, stop signals.
"""
from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserInputError
from ..precision import Precision
from .distributed import DistContext, mean_over_ranks

__all__ = ["StopFlag", "copy_major", "train_one_epoch", "EpochResult"]

_logger = logging.getLogger("train")


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step instead of killing it mid-write.

    The first signal sets the flag; a second one restores the default behaviour (immediate stop).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        _logger.warning("received %s: stopping after this step; the last complete epoch's "
                        "checkpoint stays resumable", signal.Signals(signum).name)

    def install(self) -> "StopFlag":
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. called from a worker thread)
                pass
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def agreed(self, ctx: DistContext) -> bool:
        """True if any process was asked to stop (so all ranks leave the epoch together). A rank that
        was not signalled takes the signal of one that was: every rank exits with the same status."""
        if not ctx.distributed:
            return self.requested
        signum = torch.tensor([self.signum or 0], device=ctx.device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        self.signum = self.signum or int(signum.item()) or None
        return self.requested


def copy_major(images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C, H, W) copies → (T·B, C, H, W) with row t·B + b = copy t of image b."""
    if images.dim() != 5:
        return images, target
    batch, copies = images.shape[:2]
    stacked = images.transpose(0, 1).reshape(batch * copies, *images.shape[2:])
    return stacked, target.repeat(copies)


SKIPPED = "skipped_steps"  # float16 steps the gradient scaler skipped (their loss overflowed)


@dataclass
class EpochResult:
    """Averages over the epoch's steps (all processes) and its throughput."""

    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    num_updates: int = 0
    interrupted: bool = False


def train_one_epoch(
    *,
    epoch: int,
    task: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    ctx: DistContext,
    stop: StopFlag,
    scheduler: Any = None,
    sched_on_updates: bool = False,
    num_updates: int = 0,
    clip_grad: float | None = None,
    channels_last: bool = False,
    max_steps: int | None = None,
    log_interval: int = 50,
    model_ema: Any = None,
    steps_per_epoch: int | None = None,
) -> EpochResult:
    """Run one epoch; returns early (``interrupted``) when a stop signal arrived.

    The step never waits for the device: the loss and its terms are summed on the device and read
    (and checked for NaN/inf) at log intervals and at the end of the epoch.
    """
    task.train()
    params = [p for p in task.parameters() if p.requires_grad]
    names: list[str] = []
    running: torch.Tensor | None = None  # device sums of [loss, *terms] over the epoch's steps
    images_seen = views_seen = 0
    total_steps = min(x for x in (steps_per_epoch, max_steps) if x is not None) if (
        steps_per_epoch is not None or max_steps is not None) else None
    start = time.perf_counter()
    step = 0
    result = EpochResult(num_updates=num_updates)
    for step, (images, target) in enumerate(loader, start=1):
        num_images = images.shape[0]
        images, target = copy_major(images, target)
        images = images.to(ctx.device, dtype=precision.model_dtype, non_blocking=True)
        target = target.to(ctx.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)

        components = task(images, target)
        loss = components.pop("loss")
        _optimizer_step(loss, optimizer, precision, params, clip_grad)
        result.num_updates += 1
        if model_ema is not None:
            model_ema.update(task.get_trainable_module(), step=result.num_updates)
        if scheduler is not None and sched_on_updates:
            scheduler.step_update(num_updates=result.num_updates)

        names = ["loss", *components]
        values = torch.stack([loss.detach().float().reshape(()), *(v.reshape(()) for v in components.values())])
        if precision.scaler is not None:
            # float16: a step whose loss overflowed was skipped by the scaler (no update; the scale backs
            # off), as in timm's loop; it stays out of the means and is counted, without a host read
            finite = torch.isfinite(values).all()
            values = torch.cat([torch.where(finite, values, torch.zeros_like(values)), (~finite).float().reshape(1)])
            names.append(SKIPPED)
        running = values if running is None else running + values
        images_seen += num_images
        views_seen += images.shape[0]

        if step % log_interval == 0 or step == total_steps:
            mean_loss = _step_means(running, names, epoch, step)["loss"]  # NaN stops every rank
            if ctx.is_primary:
                _logger.info("epoch %d step %d%s  loss %.4f  lr %.4g  %.1f img/s", epoch, step,
                             f"/{total_steps}" if total_steps else "", mean_loss, optimizer.param_groups[0]["lr"],
                             images_seen / max(time.perf_counter() - start, 1e-9))
        if stop.agreed(ctx):
            result.interrupted = True
            break
        if max_steps is not None and step >= max_steps:
            break
    elapsed = time.perf_counter() - start
    if step == 0:
        raise UserInputError("the training loader yielded no batch: the training set is smaller "
                             "than one --batch-size (lower it)")
    metrics = _step_means(running, names, epoch, step)
    metrics = mean_over_ranks(metrics, ctx)
    metrics["epoch_time_s"] = elapsed
    metrics["images_per_sec"] = images_seen * ctx.world_size / max(elapsed, 1e-9)
    if views_seen != images_seen:
        metrics["views_per_sec"] = views_seen * ctx.world_size / max(elapsed, 1e-9)
    metrics["lr"] = optimizer.param_groups[0]["lr"]
    result.metrics, result.steps = metrics, step
    return result


def _optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, precision: Precision,
                    params: list[torch.Tensor], clip_grad: float | None) -> None:
    """Backward and step: through timm's NativeScaler when float16 needs one, else plainly (clipping included)."""
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is not None:
        precision.scaler(loss, optimizer, clip_grad=clip_grad, parameters=params)
        return
    loss.backward()
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    optimizer.step()


def _step_means(running: torch.Tensor | None, names: list[str], epoch: int, step: int) -> dict[str, float]:
    """The per-step means of the device sums (one device-to-host copy) over the steps that updated, and
    ``skipped_steps`` where float16's scaler skips; a NaN/inf loss (or float16 skipping every step) stops the run."""
    sums = dict(zip(names, running.tolist())) if running is not None else {}
    skipped = int(sums.pop(SKIPPED, 0))
    if not math.isfinite(sums.get("loss", 0.0)):
        raise FloatingPointError(f"loss is {sums['loss']} by epoch {epoch} step {step}; lower --lr or check the data")
    if skipped >= step:
        raise FloatingPointError(f"every step's float16 loss overflowed by epoch {epoch} step {step}; "
                                 f"lower --lr or train with --amp-dtype bfloat16")
    means = {key: value / (step - skipped) for key, value in sums.items()}
    if SKIPPED in names:
        means[SKIPPED] = skipped
    return means

"""Test helper: train.py's training under torchrun, keeping what every rank saw and ended with.

    torchrun --nproc_per_node 2 tests/training/ddp_probe.py OUT <train.py arguments>

It runs what ``timm_longtail.training.run`` runs (same set-up, same job), but keeps the job so that
each rank can write ``OUT/rank<r>.pt`` afterwards: its exit code, when its run returned, its final model state and, per
training step, the input images and targets it trained on. Those are recorded by torch's global
forward pre-hooks, so the training code runs unchanged. Each rank also writes ``OUT/rank<r>.pid``
at start (a test signals one rank). ``TIMM_LT_PROBE_STEP_DELAY`` (seconds) slows every step of the
last rank, so that a test can signal a run before it ends; ``TIMM_LT_PROBE_STOP_DELAY`` (seconds) slows
rank 0 on its way out of a stopped run, as a slow file system would (torchrun ends the other ranks as
soon as one exits, so a rank that leaves first must not cut rank 0 short).
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import timm_longtail  # noqa: F401  (registers the models; torchvision importable before timm)
import torch
from timm.utils import setup_default_logging

from timm_longtail.checkpoint import unwrap_model
from timm_longtail.training import given_settings, parse_args
from timm_longtail.training.distributed import cleanup_distributed, setup_distributed
from timm_longtail.training.methods import check_args
from timm_longtail.training.runner import _Run, resume_recipe
from timm_longtail.training.tasks import ExpertsForward


def main(out: Path, argv: list[str]) -> int:
    setup_default_logging()
    args = parse_args(argv)
    resumed, recipe_changes = resume_recipe(args, given_settings(argv))
    spec = check_args(args)
    ctx = setup_distributed(args.device)
    (out / f"rank{ctx.rank}.pid").write_text(str(os.getpid()))
    delay = float(os.environ.get("TIMM_LT_PROBE_STEP_DELAY", "0")) if ctx.rank == ctx.world_size - 1 else 0.0
    job = _Run(args, spec, ctx, shlex.join(["train.py", *argv]), resumed, recipe_changes)
    if ctx.rank == 0 and (stop_delay := float(os.environ.get("TIMM_LT_PROBE_STOP_DELAY", "0"))):
        stopping = job._interrupted

        def slow_stop(*stop_args):
            time.sleep(stop_delay)
            return stopping(*stop_args)

        job._interrupted = slow_stop
    images: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []

    def record(module: torch.nn.Module, inputs: tuple) -> None:
        if isinstance(module, ExpertsForward) and module.training:
            images.append(inputs[0].detach().cpu().clone())
            time.sleep(delay)
        elif module is getattr(job, "criterion", None):
            targets.append(inputs[1].detach().cpu().clone())

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        code = job.execute()
    finally:
        hook.remove()
    left = time.time()  # when this rank's run returned (a test compares the ranks')
    state = {k: v.detach().cpu().clone() for k, v in unwrap_model(job.model).state_dict().items()}
    torch.save(dict(code=code, left=left, state=state, images=images, targets=targets), out / f"rank{ctx.rank}.pt")
    ctx.barrier()  # every rank's file is written before any rank exits (and torchrun stops the rest)
    cleanup_distributed(ctx)
    return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))

"""What each method needs from the loop: allowed models, stage switches, loss, trainable part.

A method here is a row of ``METHODS`` plus a loss from ``timm_longtail.losses``; the loop in
``loop.py`` only sees the stage's task (``tasks.py``). Every check of user input that does not
need data or weights runs in ``check_args`` so a bad command fails in well under a second.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from torch import nn

from ..errors import UserInputError
from .config import check_choices

__all__ = ["MethodSpec", "METHODS", "check_args", "check_model", "resolve_drw_epoch", "freeze_for_stage"]


@dataclass(frozen=True)
class MethodSpec:
    """Static facts about one training method."""

    name: str
    model_prefixes: tuple[str, ...]  # model families the method is defined for
    reweights: bool  # has a DRW / temperature switch at --drw-epoch
    multi_view: bool  # takes T > 1 augmented copies per image
    transform_family: str  # 'ride' (plain augmentation) or 'nclpp' (AutoAugment/RandAugment + cutout)


METHODS: dict[str, MethodSpec] = {
    "ce": MethodSpec("ce", ("ride_", "nclpp_"), reweights=False, multi_view=False, transform_family="ride"),
    "bsce": MethodSpec("bsce", ("ride_", "nclpp_"), reweights=False, multi_view=False, transform_family="ride"),
    "ldam_drw": MethodSpec("ldam_drw", ("ride_", "nclpp_"), reweights=True, multi_view=False,
                           transform_family="ride"),
    "ride": MethodSpec("ride", ("ride_",), reweights=True, multi_view=False, transform_family="ride"),
    "nclpp": MethodSpec("nclpp", ("nclpp_",), reweights=False, multi_view=True, transform_family="nclpp"),
}


def _check_model_family(model_name: str, spec: MethodSpec, where: str) -> None:
    if not model_name.startswith(spec.model_prefixes):
        families = " or ".join(f"{p}*" for p in spec.model_prefixes)
        raise UserInputError(
            f"{where}: model '{model_name}' does not fit --method {spec.name} (use a {families} model)")


def check_args(args: argparse.Namespace) -> MethodSpec:
    """Reject inconsistent flags before any data, model or checkpoint is touched."""
    spec = METHODS.get(args.method)
    if spec is None:
        raise UserInputError(f"unknown --method '{args.method}' (choose from {', '.join(METHODS)})")
    check_choices(args)
    if args.stage == "router":
        if args.method != "ride":
            raise UserInputError("--stage router exists only for --method ride")
        if not (args.initial_checkpoint or args.resume):
            raise UserInputError("--stage router needs --initial-checkpoint <stage-1 checkpoint>")
        if args.teacher:
            raise UserInputError("--teacher applies to the experts stage, not to --stage router")
    elif args.model is None and not args.resume and not args.initial_checkpoint:
        raise UserInputError("--model is required (e.g. --model ride_resnet32_3e)")
    if args.model is not None:
        _check_model_family(args.model, spec, "--model")
    if args.teacher and args.method != "ride":
        raise UserInputError("--teacher (distillation) is part of --method ride only")
    if args.num_copies < 1:
        raise UserInputError("--num-copies must be at least 1")
    if args.num_copies > 1 and not spec.multi_view:
        raise UserInputError(f"--num-copies {args.num_copies} needs --method nclpp ({args.method} uses one view)")
    if args.num_experts is not None and args.num_experts < 1:
        raise UserInputError("--num-experts must be at least 1")
    if not 0.0 <= args.val_split_fraction < 1.0:
        raise UserInputError("--val-split-fraction must be in [0, 1)")
    if args.select_by == "val" and args.val_split_fraction <= 0:
        raise UserInputError("--select-by val needs a held-out split: set --val-split-fraction > 0")
    for name in ("epochs", "batch_size", "eval_batch_size", "log_interval"):
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        raise UserInputError("--workers must be >= 0")
    if args.max_steps_per_epoch is not None and args.max_steps_per_epoch < 1:
        raise UserInputError("--max-steps-per-epoch must be at least 1")
    if args.drw_epoch is not None and not spec.reweights:
        raise UserInputError(f"--drw-epoch has no effect with --method {args.method}; remove it")
    if args.loss_kwargs is not None and not isinstance(args.loss_kwargs, dict):
        raise UserInputError("--loss-kwargs must be a YAML mapping, e.g. '{diversity_factor: -0.45}'")
    if args.model_kwargs is not None and not isinstance(args.model_kwargs, dict):
        raise UserInputError("--model-kwargs must be a YAML mapping, e.g. '{reduce_dimension: false}'")
    if args.pretrained_backbone and (args.pretrained or args.stage == "router"):
        raise UserInputError("--pretrained-backbone seeds a new model: drop --pretrained / use it in the "
                             "experts stage only")
    return spec


def resolve_drw_epoch(args: argparse.Namespace, spec: MethodSpec) -> int | None:
    """Epoch index from which DRW / temperatures are on: default 80 % (160 of 200, 80 of 100)."""
    if not spec.reweights or args.stage != "experts":
        return None
    return args.drw_epoch if args.drw_epoch is not None else int(round(0.8 * args.epochs))


def check_model(model: nn.Module, model_name: str, spec: MethodSpec, stage: str) -> None:
    """Checks that need the built model (it may come from a checkpoint, not --model)."""
    if not hasattr(model, "forward_train"):
        raise UserInputError(f"model '{model_name}' is not a timm_longtail multi-expert model")
    _check_model_family(model_name, spec, "model")
    if stage == "router" and not getattr(model, "has_router", False):
        raise UserInputError(f"--stage router: model '{model_name}' has no router "
                             f"(a RIDE model with at least 2 experts has one)")


def freeze_for_stage(model: nn.Module, stage: str) -> None:
    """Stage 'experts' trains all but the router; stage 'router' trains the router only.

    The router is frozen in stage 1 because it takes no part in ``forward_train``: leaving it
    trainable would give DDP parameters without gradients. Not ``timm.utils.freeze``: it swaps
    BatchNorm for ``FrozenBatchNorm2d`` (no ``num_batches_tracked``), so the checkpoint's state dict would
    change; the router stage keeps the experts' BatchNorm statistics with eval mode instead.
    """
    router = getattr(model, "router", None)
    train_router = stage == "router"
    for param in model.parameters():
        param.requires_grad_(not train_router)
    if router is not None:
        for param in router.parameters():
            param.requires_grad_(train_router)

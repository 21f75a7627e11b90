"""One process or many (``torchrun``): device choice, process group, rank-0 helpers.

timm's ``init_distributed_device_so`` reads the torchrun environment and opens the process group;
we keep its result in a small dataclass instead of writing it onto ``args``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from timm.utils.distributed import init_distributed_device_so, is_distributed_env

from .._machine import resolve_device

__all__ = ["DistContext", "setup_distributed", "cleanup_distributed", "mean_over_ranks"]


@dataclass(frozen=True)
class DistContext:
    """Where this process runs and who it is among the training processes."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        """Rank 0 logs, writes files and runs the evaluations."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_distributed(device: str | None) -> DistContext:
    """Resolve ``--device`` and, under torchrun, open the process group (one device per rank)."""
    probe = resolve_device(device)
    if not is_distributed_env():
        if probe.type == "cuda":
            torch.cuda.set_device(probe.index or 0)
        return DistContext(device=probe)
    info = init_distributed_device_so(device=probe.type)
    return DistContext(
        device=torch.device(info["device"]),
        rank=info["global_rank"],
        local_rank=info["local_rank"],
        world_size=info["world_size"],
    )


def cleanup_distributed(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average scalar metrics over processes (identity on one process)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed /= ctx.world_size
    return dict(zip(keys, packed.tolist()))

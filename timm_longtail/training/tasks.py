"""The training stages as timm tasks (``timm.task.TrainingTask``): each owns its forward and objective.

A task is called as ``task(images, target)`` and returns ``{"loss": ..., <logged terms>}``, as timm's
tasks do. Inside, a *forward module* (an ``nn.Module`` whose ``forward`` calls the model's
``forward_train``, so DistributedDataParallel can wrap it: calling ``model.forward_train`` past a
DDP wrapper would skip its gradient synchronisation set-up) runs under autocast, and an
*objective* computes the loss on its output in float32. ``compile`` and ``prepare_distributed``
wrap the forward module, in timm's order (compile first).

- :class:`ExpertsTask`: every expert's logits in one pass, the method's loss (all single-stage
  methods and RIDE stage 1);
- :class:`DistillationTask`: the same plus RIDE's distillation from a frozen teacher;
- :class:`RouterTask`: RIDE stage 2, frozen experts and a trainable router.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from timm.task import TrainingTask
from timm.utils import unwrap_model
from torch import nn

from ..errors import UserInputError
from ..precision import Precision

__all__ = [
    "DistillationTask", "ExpertsForward", "ExpertsObjective", "ExpertsTask", "RouterForward", "RouterObjective",
    "RouterTask", "StageTask", "build_task", "loss_terms",
]


class ExpertsForward(nn.Module):
    """Stage 1: every expert's logits in one pass (``forward_train``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_train(images)

    def train(self, mode: bool = True) -> "ExpertsForward":
        self.model.train(mode)
        self.training = mode
        return self


class RouterForward(nn.Module):
    """RIDE stage 2: frozen experts (BN in eval, no graph), trainable router on their outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            outputs = self.model.forward_train(images)
        router_logits = self.model.forward_router(outputs["features"], outputs["logits"])
        return {"router_logits": router_logits, "logits": outputs["logits"]}

    def train(self, mode: bool = True) -> "RouterForward":
        """Only the router follows ``mode``: the experts' BatchNorm statistics stay frozen."""
        self.model.eval()
        self.model.router.train(mode)
        self.training = mode
        return self


def loss_terms(loss: nn.Module) -> dict[str, torch.Tensor]:
    """The loss's last terms as 0-d device tensors (none for a loss that records no terms)."""
    component_tensors = getattr(loss, "component_tensors", None)
    return component_tensors() if component_tensors is not None else {}


class ExpertsObjective:
    """Method loss on all experts' logits, plus RIDE distillation from a teacher when given.

    With a teacher the objective is ``r · (method loss + distillation)``, ``r =
    distillation.repeats(E)``: 1, or E for ``on="reference"`` (the RIDE code adds both once per
    student expert). The logged components are scaled by ``r`` too, so they add up to the loss.
    """

    def __init__(self, criterion: nn.Module, teacher: nn.Module | None = None,
                 distillation: nn.Module | None = None):
        self.criterion = criterion
        self.teacher = teacher
        self.distillation = distillation

    def __call__(self, outputs: dict[str, torch.Tensor], images: torch.Tensor,
                 target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        expert_logits = outputs["logits"].float()
        loss = self.criterion(expert_logits, target)
        components = loss_terms(self.criterion)
        if self.teacher is not None and self.distillation is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(images, mode="ensemble").float()
            distill = self.distillation(expert_logits, teacher_logits)
            repeats = self.distillation.repeats(expert_logits.shape[0])
            components = {key: repeats * value for key, value in components.items()}
            components["distill"] = repeats * distill.detach()
            loss = repeats * (loss + distill)
        return loss, components


class RouterObjective:
    """RIDE router loss (weighted BCE towards 'the next expert would fix the ensemble')."""

    def __init__(self, router_loss: nn.Module):
        self.router_loss = router_loss

    def __call__(self, outputs: dict[str, torch.Tensor], images: torch.Tensor,
                 target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.router_loss(outputs["router_logits"].float(), outputs["logits"].float(), target)
        components = loss_terms(self.router_loss)
        return loss, components


class StageTask(TrainingTask):
    """A forward module and an objective as one timm task (see the module docstring)."""

    def __init__(self, forward: nn.Module, objective: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]],
                 precision: Precision, device: torch.device | None = None):
        super().__init__(device=device, verbose=False)
        self.forward_module = forward  # the teacher and the losses live in the objective: not trained, not wrapped
        self.objective = objective
        self.precision = precision

    def get_trainable_module(self, ema: bool = False) -> nn.Module | None:
        """The model (without the DDP/compile wrappers and the forward adapter)."""
        if ema:
            return super().get_trainable_module(ema=True)
        return unwrap_model(self.forward_module).model

    def compile(self, backend: str = "inductor", mode: str | None = None, **compile_kwargs: Any) -> nn.Module:
        self.forward_module = torch.compile(self.forward_module, backend=backend, mode=mode, **compile_kwargs)
        return self.forward_module

    def prepare_distributed(self, device_ids: list | None = None, **ddp_kwargs: Any) -> "StageTask":
        self.forward_module = nn.parallel.DistributedDataParallel(self.forward_module, device_ids=device_ids,
                                                                  **ddp_kwargs)
        return self

    def forward(self, images: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.precision.autocast():
            outputs = self.forward_module(images)
        loss, terms = self.objective(outputs, images, target)
        return {"loss": loss, **terms}


class ExpertsTask(StageTask):
    """Every expert trained on the method's loss (ce, bsce, ldam_drw, nclpp, RIDE stage 1)."""

    def __init__(self, model: nn.Module, criterion: nn.Module, precision: Precision,
                 device: torch.device | None = None):
        super().__init__(ExpertsForward(model), ExpertsObjective(criterion), precision, device)


class DistillationTask(StageTask):
    """RIDE stage 1 with distillation from a frozen teacher (``--teacher``)."""

    def __init__(self, model: nn.Module, criterion: nn.Module, teacher: nn.Module, distillation: nn.Module,
                 precision: Precision, device: torch.device | None = None):
        super().__init__(ExpertsForward(model), ExpertsObjective(criterion, teacher, distillation), precision, device)


class RouterTask(StageTask):
    """RIDE stage 2: the router alone learns; the experts and their BatchNorm statistics stay frozen."""

    def __init__(self, model: nn.Module, router_loss: nn.Module, precision: Precision,
                 device: torch.device | None = None):
        super().__init__(RouterForward(model), RouterObjective(router_loss), precision, device)


def build_task(stage: str, model: nn.Module, criterion: nn.Module, precision: Precision, device: torch.device, *,
               teacher: nn.Module | None = None, distillation: nn.Module | None = None,
               compile_backend: str | None = None, compile_mode: str | None = None,
               distributed: bool = False) -> StageTask:
    """The stage's task, compiled (``compile_backend``) and then wrapped for DDP, in timm's order."""
    if stage == "router":
        task: StageTask = RouterTask(model, criterion, precision, device)
    elif teacher is not None:
        task = DistillationTask(model, criterion, teacher, distillation, precision, device)
    else:
        task = ExpertsTask(model, criterion, precision, device)
    if compile_backend:
        try:
            task.compile(backend=compile_backend, mode=compile_mode)
        except RuntimeError as error:  # an unknown backend or mode
            raise UserInputError(f"--torchcompile {compile_backend}: {error}") from None
    if distributed:
        task.prepare_distributed(device_ids=[device.index] if device.type == "cuda" else None)
    return task

"""Weight initialisation: each reference's own, or timm's.

Zoo weights must come from the recipe behind the published numbers, and the initialisation is part
of that recipe. The references differ from timm and from each other:

``ride`` (RIDE code)
    CIFAR: ``kaiming_normal_`` with its defaults (fan-in, gain sqrt 2) on every conv and linear.
    ImageNet: ``N(0, 2 / (k·k·C_out))`` on convs (Kaiming fan-out). BN weight 1, bias 0 and no
    zeroed last BN. Cosine heads: each class vector uniform in direction with unit norm (the
    reference's ``uniform_(-1, 1).renorm_(...).mul_(1e5)``); the norm matters because weight decay
    and the learning rate act on the raw vector, although the forward normalises it.
``nclpp`` (NCL code)
    CIFAR: ``kaiming_normal_`` (fan-in) on convs, PyTorch's defaults elsewhere (the classifier is
    built outside the backbone). ImageNet: PyTorch's defaults throughout; cosine heads
    ``U(±1/sqrt(d))`` with zero bias, which is what :class:`CosineLinear` starts from.
``timm``
    timm's ResNet: Kaiming fan-out (ReLU) convs, unit BN, the last BN of each residual branch
    zeroed (``zero_init_last``), Kaiming-normal linears with zero bias.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import UserInputError
from ._experts import CosineLinear

__all__ = ["WEIGHT_INITS", "init_weights"]

WEIGHT_INITS = ("reference", "timm")


def init_weights(model: nn.Module, scheme: str, reference: str, stem: str) -> None:
    """Initialise ``model`` in place.

    Args:
        scheme: ``'reference'`` (the method's own reference code) or ``'timm'``.
        reference: which reference ``'reference'`` means: ``'ride'`` or ``'nclpp'``.
        stem: ``'cifar'`` or ``'imagenet'`` (the references initialise the two differently).
    """
    if scheme == "timm":
        _init_timm(model)
    elif scheme != "reference":
        raise UserInputError(f"unknown weight_init {scheme!r}: use one of {', '.join(WEIGHT_INITS)}")
    elif reference == "ride":
        _init_ride(model, stem)
    elif reference == "nclpp":
        _init_nclpp(model, stem)
    else:
        raise ValueError(f"unknown reference {reference!r}")


def _init_ride(model: nn.Module, stem: str) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if stem == "cifar":
                nn.init.kaiming_normal_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear) and stem == "cifar":
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, CosineLinear):
            with torch.no_grad():
                module.weight.uniform_(-1.0, 1.0)
                module.weight.div_(module.weight.norm(dim=1, keepdim=True))


def _init_nclpp(model: nn.Module, stem: str) -> None:
    if stem != "cifar":
        return  # PyTorch's construction defaults are the reference's initialisation
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)


def _init_timm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if hasattr(module, "zero_init_last"):
            module.zero_init_last()

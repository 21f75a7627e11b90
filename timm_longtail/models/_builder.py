"""The one builder behind every ``ride_*`` / ``nclpp_*`` model function."""
from __future__ import annotations

from typing import Any, Type

from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

from ._experts import MultiExpertNet
from .weights import check_pretrained_available

__all__ = ["create_lt_model"]


def create_lt_model(model_cls: Type[MultiExpertNet], variant: str, pretrained: bool = False, **kwargs: Any) -> MultiExpertNet:
    """``build_model_with_cfg`` plus two things timm does not know about our models.

    With ``pretrained=True`` the published-weights table is checked first, so a variant without
    trained weights fails with a clear message rather than a Hub 404, and the checked source (a
    committed ``hub_cards`` file in a source checkout, else the Hub) is what timm loads. ``features_only`` uses
    ``forward_intermediates`` (timm's getter wrapper), with every level by default (4 for CIFAR
    ResNets, 5 for ImageNet ResNets).
    """
    if pretrained:
        overlay = kwargs.get("pretrained_cfg_overlay")
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=overlay)
        source = check_pretrained_available(variant, cfg.to_dict(), cache_dir=kwargs.get("cache_dir"))
        if source:
            kwargs["pretrained_cfg_overlay"] = {**(overlay or {}), **source}
    out_indices = tuple(range(len(kwargs.get("layers", ())) + 1))
    return build_model_with_cfg(
        model_cls, variant, pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )

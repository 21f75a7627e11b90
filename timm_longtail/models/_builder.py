"""The one builder behind every ``ride_*`` / ``nclpp_*`` model function."""
from __future__ import annotations

from typing import Any, Dict, Type

from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

from ..convert.checkpoint import read_reference_checkpoint
from ..convert.layouts import checkpoint_filter_fn, reference_model_kwargs
from ..convert._pickle import foreign_pickle_globals
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

    A checkpoint saved by a reference trainer (RIDE's, NCL's, LDAM-DRW's; ``pretrained_cfg_overlay=
    dict(file=...)``) loads in the same call: read without running its pickled code, its classes,
    experts, widths and router size fill the model's keywords (a contradicting keyword or another
    architecture is one error), and timm's ``pretrained_filter_fn`` maps its names onto ours.
    """
    if pretrained:
        overlay = kwargs.get("pretrained_cfg_overlay")
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=overlay)
        source = check_pretrained_available(variant, cfg.to_dict(), cache_dir=kwargs.get("cache_dir"))
        if source:
            kwargs["pretrained_cfg_overlay"] = {**(overlay or {}), **source}
        file = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")
        if file and not str(file).endswith(".safetensors"):
            kwargs = _reference_file_kwargs(variant, str(file), kwargs)
    out_indices = tuple(range(len(kwargs.get("layers", ())) + 1))
    with foreign_pickle_globals():  # timm's weights-only load of a reference file reads its config as data
        return build_model_with_cfg(
            model_cls, variant, pretrained,
            feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
            pretrained_filter_fn=checkpoint_filter_fn,
            **kwargs,
        )


def _reference_file_kwargs(variant: str, file: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The model keywords a reference checkpoint implies (its tensors mapped, not read); the overlay
    gets its class count too, so timm keeps its classifier rather than dropping it as a mismatch."""
    reference = read_reference_checkpoint(file, mmap=True)
    if reference is None:
        return kwargs
    merged = reference_model_kwargs(variant, reference.layout, kwargs, where=file)
    merged["pretrained_cfg_overlay"] = {**kwargs["pretrained_cfg_overlay"], "num_classes": reference.layout.num_classes}
    return merged

"""The reference trainers' state-dict layouts, recognised from their keys and shapes, and mapped
one to one onto our models' names.

Three codes saved the checkpoints users have (DataParallel's ``module.`` prefix removed first):

``ride``  (frank-xwang/RIDE-LongTailRecognition) ``backbone.`` + the shared ``conv1`` / ``bn1`` /
    ``layer1`` (ImageNet ResNets: also ``layer2``), one ``layer<k>s.<e>`` per expert and later stage,
    ``linears.<e>.weight`` (a cosine head stored (in, out)), and after the EA stage the router:
    ``expert_help_pred_hidden_fcs.<i>`` and the shared ``expert_help_pred_fc``.
``ncl``   (Bazinga699/NCL, NCL and NCL++) ``backbone.<i>.`` one whole ResNet per expert,
    ``classifier.<i>.weight`` / ``.bias`` stored (out, in).
``ldam_drw`` (kaidic/LDAM-DRW) one plain ResNet-32: ``conv1`` ... ``layer3``, ``linear.weight``
    (cosine, (in, out)); our RIDE ResNet-32 with one expert and no channel reduction.

Everything :func:`detect_layout` reports comes from the tensors (experts, classes, widths, blocks,
router); what the tensors cannot say (an NCL head's cosine scale) is the model's. A key with no
place, two keys for one place, a shape that differs, or a model tensor left unfilled is an error,
never a partial load. The one group a file may lack is a RIDE router (a stage-1 checkpoint): the
model keeps its untrained router, marked untrained, so ``routed`` mode refuses to run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from timm.models import clean_state_dict

from ..errors import UserInputError

__all__ = ["ROUTER_TRAINED_KEY", "ReferenceLayout", "checkpoint_filter_fn", "detect_layout", "is_reference_state_dict",
           "map_state_dict", "reference_model_kwargs"]

ROUTER_TRAINED_KEY = "router.trained"
_ARCHS = {  # (stem, block, blocks per stage, cardinality) -> our architecture name
    ("cifar", "basic", (5, 5, 5), 1): "resnet32",
    ("imagenet", "bottleneck", (3, 4, 6, 3), 1): "resnet50",
    ("imagenet", "bottleneck", (3, 4, 6, 3), 32): "resnext50_32x4d",
    ("imagenet", "bottleneck", (3, 8, 36, 3), 1): "resnet152",
}
_REGISTERED_RIDE_EXPERTS = (2, 3, 4, 6)
_NAME_DEFAULTS = ("num_experts", "router_top_k")  # set by the model functions themselves, not by users
_RIDE_TRUNK = {"cifar": ("conv1", "bn1", "layer1"), "imagenet": ("conv1", "bn1", "layer1", "layer2")}
_EXPERT_WIDTH = {  # channels of an expert's last stage (ImageNet: bottleneck planes) -> reduced?
    "cifar": {48: True, 64: False}, "imagenet": {384: True, 512: False}}


@dataclass(frozen=True)
class ReferenceLayout:
    """What a reference checkpoint holds, read from its tensors."""

    source: str  # "ride" | "ncl" | "ldam_drw"
    stem: str  # "cifar" | "imagenet"
    block: str  # "basic" | "bottleneck"
    layers: Tuple[int, ...]
    cardinality: int
    num_experts: int
    num_classes: int
    reduce_dimension: bool
    router: bool = False
    router_top_k: Optional[int] = None
    router_hidden_dim: Optional[int] = None
    notes: Tuple[str, ...] = field(default=())

    @property
    def arch(self) -> str:
        key = (self.stem, self.block, self.layers, self.cardinality)
        if key not in _ARCHS:
            raise UserInputError(
                f"a {self.source} checkpoint of a {self.stem} ResNet with {self.block} blocks {list(self.layers)} "
                f"(groups {self.cardinality}) has no timm-longtail model (ours: ResNet-32, ResNet-50, "
                f"ResNeXt-50 32x4d, ResNet-152)")
        return _ARCHS[key]

    @property
    def family(self) -> str:
        """``ride`` (RIDE and LDAM-DRW checkpoints) or ``nclpp``: the model family it becomes."""
        return "nclpp" if self.source == "ncl" else "ride"

    def model_name(self) -> str:
        """The registered model it loads into: ``ride_<arch>_<E>e``; ``nclpp_<arch>``; one-expert RIDE
        networks (LDAM-DRW) use ``ride_<arch>_2e`` with ``num_experts=1`` (see :meth:`model_kwargs`)."""
        if self.family == "nclpp":
            return f"nclpp_{self.arch}"
        experts = self.num_experts if self.num_experts in _REGISTERED_RIDE_EXPERTS else 2
        return f"ride_{self.arch}_{experts}e"

    def model_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments that make :meth:`model_name` this checkpoint's network."""
        kwargs: Dict[str, Any] = dict(num_classes=self.num_classes)
        if self.family == "nclpp":
            if self.num_experts != 2:
                kwargs["num_experts"] = self.num_experts
            return kwargs
        if self.num_experts not in _REGISTERED_RIDE_EXPERTS:
            kwargs["num_experts"] = self.num_experts
        if not self.reduce_dimension:
            kwargs["reduce_dimension"] = False
        if self.router_top_k is not None:
            kwargs["router_top_k"] = self.router_top_k
        if self.router_hidden_dim is not None and self.router_hidden_dim != 16:
            kwargs["router_hidden_dim"] = self.router_hidden_dim
        return kwargs

    def describe(self) -> str:
        router = "with its trained router" if self.router else "no router"
        return (f"{self.source} checkpoint: {self.arch}, {self.num_experts} expert(s), {self.num_classes} classes, "
                f"{'reduced' if self.reduce_dimension else 'full'} expert widths, {router}")


def _strip(state_dict: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in clean_state_dict(dict(state_dict)).items() if isinstance(v, torch.Tensor)}


def is_reference_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether the keys are a reference trainer's (not ours: ``trunk.`` / ``experts.`` / ``heads.``)."""
    keys = [k.removeprefix("module.") for k in state_dict]
    return bool(keys) and not any(k.startswith(("trunk.", "experts.", "heads.")) for k in keys)


def _source(keys: Tuple[str, ...]) -> str:
    if any(re.match(r"backbone\.\d+\.", k) for k in keys) and any(k.startswith("classifier.") for k in keys):
        return "ncl"
    if any(k.startswith("backbone.") for k in keys):
        return "ride"
    if "conv1.weight" in keys and "linear.weight" in keys:
        return "ldam_drw"
    raise UserInputError(
        f"unrecognised checkpoint layout (not RIDE's, NCL's, LDAM-DRW's or ours); first keys: {list(keys)[:4]}")


def _count_blocks(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _net_shape(net: Mapping[str, torch.Tensor], stage_key, where: str) -> Tuple[str, str, Tuple[int, ...], int]:
    """(stem, block, blocks per stage, groups) of one ResNet's keys; ``stage_key(k)`` is the regex
    prefix of stage ``k``'s blocks."""
    conv1 = net.get("conv1.weight")
    if conv1 is None:
        raise UserInputError(f"{where}: no conv1.weight, not a ResNet")
    stem = "imagenet" if tuple(conv1.shape[-2:]) == (7, 7) else "cifar"
    block = "bottleneck" if any(re.search(r"\.conv3\.weight$", k) for k in net) else "basic"
    stages = 3 if stem == "cifar" else 4
    layers = tuple(_count_blocks(net, stage_key(s) + r"(\d+)\.") for s in range(1, stages + 1))
    cardinality = 1
    if block == "bottleneck":
        conv2 = next(v for k, v in net.items() if re.match(stage_key(1) + r"0\.conv2\.weight$", k))
        cardinality = conv2.shape[0] // conv2.shape[1]
    return stem, block, layers, cardinality


def _reduced(stem: str, width: int, where: str) -> bool:
    if width not in _EXPERT_WIDTH[stem]:
        raise UserInputError(f"{where}: expert width {width} is neither RIDE's reduced nor the full width "
                             f"({sorted(_EXPERT_WIDTH[stem])})")
    return _EXPERT_WIDTH[stem][width]


def detect_layout(state_dict: Mapping[str, Any]) -> ReferenceLayout:
    """Read a reference checkpoint's architecture from its ``state_dict`` (``module.`` allowed)."""
    sd = _strip(state_dict)
    keys = tuple(sd)
    source = _source(keys)
    if source == "ncl":
        experts = _count_blocks(keys, r"backbone\.(\d+)\.")
        net = {k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith("backbone.0.")}
        stem, block, layers, cardinality = _net_shape(net, lambda s: rf"layer{s}\.", "NCL expert 0")
        head = sd.get("classifier.0.weight")
        if head is None:
            raise UserInputError("NCL checkpoint without classifier.0.weight")
        if any(k.startswith(("MOCO.", "backbone_MA.", "classifier_ce.")) for k in keys):
            raise UserInputError("an NCL checkpoint with MoCo (contrastive) branches: only the plain NCL / NCL++ "
                                 "network (NETWORK.MOCO False) converts")
        return ReferenceLayout("ncl", stem, block, layers, cardinality, experts, int(head.shape[0]),
                               reduce_dimension=False)
    net = {k.removeprefix("backbone."): v for k, v in sd.items()}
    multi = any(re.match(r"layer\ds\.", k) for k in net)
    stage_key = (lambda s: rf"layer{s}s\.0\." if f"layer{s}s.0.0.conv1.weight" in net else rf"layer{s}\.")
    stem, block, layers, cardinality = _net_shape(net, stage_key, f"{source} network")
    last = len(layers)
    experts = _count_blocks(net, rf"layer{last}s\.(\d+)\.") if multi else 1
    block0 = f"layer{last}s.0.0." if multi else f"layer{last}.0."
    planes = net[block0 + "conv3.weight"].shape[0] // 4 if block == "bottleneck" else net[block0 + "conv1.weight"].shape[0]
    reduced = _reduced(stem, int(planes), f"{source} network")
    head = net.get("linears.0.weight" if multi else "linear.weight")
    if head is None:
        raise UserInputError(f"{source} checkpoint without its classifier ({'linears.0' if multi else 'linear'}.weight)")
    if f"{'linears.0' if multi else 'linear'}.bias" in net:
        raise UserInputError(f"a {source} checkpoint with plain linear heads (use_norm false): RIDE models here have "
                             f"RIDE's cosine heads")
    if any(k.startswith("expert_help_pred_fcs.") for k in net):
        raise UserInputError("a RIDE router with one output layer per expert (share_expert_help_pred_fc false): "
                             "ours shares it, as every released RIDE config does")
    router = "expert_help_pred_fc.weight" in net
    top_k = hidden = None
    if router:
        hidden = int(net["expert_help_pred_hidden_fcs.0.weight"].shape[0])
        top_k = int(net["expert_help_pred_fc.weight"].shape[1]) - hidden
    return ReferenceLayout(source, stem, block, layers, cardinality, experts, int(head.shape[1]), reduced, router, top_k, hidden)


def _same(value: torch.Tensor) -> torch.Tensor:
    return value


def _transposed(value: torch.Tensor) -> torch.Tensor:  # RIDE's / LDAM's cosine heads store (in, out)
    return value.t()


def _router_out(top_k: int):
    """RIDE's router output layer reads ``[top-k mean logits ; hidden]``, ours ``[hidden ; top-k]``:
    the same weights with the two column blocks swapped."""
    return lambda value: torch.cat([value[:, top_k:], value[:, :top_k]], dim=1)


def _target(key: str, layout: ReferenceLayout) -> Tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Our name for one reference key, and how its tensor becomes ours."""
    if layout.source == "ncl":
        if m := re.match(r"backbone\.(\d+)\.(.+)", key):
            return f"experts.{m.group(1)}.{m.group(2)}", _same
        if m := re.match(r"classifier\.(\d+)\.(weight|bias)$", key):
            return f"heads.{m.group(1)}.fc.{m.group(2)}", _same
        raise UserInputError(f"NCL key {key!r} has no place in nclpp_{layout.arch}")
    name = key.removeprefix("backbone.")
    top = name.split(".", 1)[0]
    if top in _RIDE_TRUNK[layout.stem]:
        return f"trunk.{name}", _same
    if m := re.match(r"layer(\d)s\.(\d+)\.(.+)", name):
        return f"experts.{m.group(2)}.layer{m.group(1)}.{m.group(3)}", _same
    if m := re.match(r"layer(\d)\.(.+)", name):  # a one-expert network's later stages
        return f"experts.0.layer{m.group(1)}.{m.group(2)}", _same
    if m := re.match(r"linears\.(\d+)\.weight$", name):
        return f"heads.{m.group(1)}.fc.weight", _transposed
    if name == "linear.weight":
        return "heads.0.fc.weight", _transposed
    if m := re.match(r"expert_help_pred_hidden_fcs\.(\d+)\.(weight|bias)$", name):
        return f"router.hidden.{m.group(1)}.{m.group(2)}", _same
    if name == "expert_help_pred_fc.weight":
        return "router.out.weight", _router_out(layout.router_top_k or 0)
    if name == "expert_help_pred_fc.bias":
        return "router.out.bias", _same
    raise UserInputError(f"{layout.source} key {key!r} has no place in {layout.model_name()}")


def map_state_dict(state_dict: Mapping[str, Any], model_state: Mapping[str, torch.Tensor],
                   layout: Optional[ReferenceLayout] = None) -> Dict[str, torch.Tensor]:
    """The reference ``state_dict`` under our names, checked one to one against ``model_state`` (the
    target model's own ``state_dict()``): every reference tensor lands once, with the model's shape,
    and every model tensor is filled. A RIDE file without a router keeps the model's router tensors
    and marks the router untrained (module docstring)."""
    sd = _strip(state_dict)
    layout = layout or detect_layout(sd)
    mapped: Dict[str, torch.Tensor] = {}
    sources: Dict[str, str] = {}
    for key, value in sd.items():
        target, convert = _target(key, layout)
        if target in sources:
            raise UserInputError(f"{key!r} and {sources[target]!r} both map to {target!r}")
        if target not in model_state:
            raise UserInputError(f"{key!r} maps to {target!r}, which {layout.model_name()} does not have "
                                 f"({layout.describe()}); is it the right model?")
        value = convert(value)
        if tuple(value.shape) != tuple(model_state[target].shape):
            raise UserInputError(f"{key!r} {tuple(value.shape)} does not fit {target!r} "
                                 f"{tuple(model_state[target].shape)} ({layout.describe()})")
        mapped[target], sources[target] = value.contiguous().to(model_state[target].dtype), key
    router_keys = [k for k in model_state if k.startswith("router.")]
    if router_keys:
        if layout.router:
            mapped[ROUTER_TRAINED_KEY] = torch.ones((), dtype=torch.bool)
        elif not any(k in mapped for k in router_keys):
            mapped.update({k: model_state[k].clone() for k in router_keys})
            mapped[ROUTER_TRAINED_KEY] = torch.zeros((), dtype=torch.bool)
    missing = [k for k in model_state if k not in mapped]
    if missing:
        raise UserInputError(f"the {layout.source} checkpoint leaves {len(missing)} tensor(s) of "
                             f"{layout.model_name()} unfilled, e.g. {missing[0]!r} ({layout.describe()})")
    return mapped


def _fits(model_name: str, layout: ReferenceLayout) -> bool:
    """Whether ``model_name`` is the registered name for ``layout``'s network (any RIDE variant of the
    architecture for an expert count without a name of its own, e.g. LDAM-DRW's one expert)."""
    expected = layout.model_name()
    if model_name == expected or (layout.family == "nclpp" and model_name.startswith(expected)):
        return True
    own_name = layout.family == "ride" and layout.num_experts in _REGISTERED_RIDE_EXPERTS
    return not own_name and re.fullmatch(rf"ride_{re.escape(layout.arch)}_\d+e", model_name) is not None


def reference_model_kwargs(model_name: str, layout: ReferenceLayout, kwargs: Mapping[str, Any],
                           where: str = "the checkpoint") -> Dict[str, Any]:
    """``kwargs`` completed with what the file says (classes, experts, widths, router size), for
    creating ``model_name`` from it. A model that is not the file's network, or a keyword that
    contradicts the file, is one clear error naming what to create instead."""
    wanted = layout.model_kwargs()
    if not _fits(model_name, layout):
        extra = "".join(f", {k}={v!r}" for k, v in wanted.items())
        raise UserInputError(f"{where} holds a {layout.describe()}: it loads into "
                             f"timm.create_model({layout.model_name()!r}{extra}), not {model_name}")
    merged = dict(kwargs)
    for key, value in wanted.items():
        given = merged.get(key)
        if key in _NAME_DEFAULTS:  # the model function's own default, already checked through the name
            merged[key] = value
            continue
        if given is not None and given != value:
            raise UserInputError(f"{key}={given!r} disagrees with {where}, which holds a {layout.describe()} "
                                 f"({key}={value!r})")
        merged[key] = value
    return merged


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` for every ``ride_*`` / ``nclpp_*`` model: a state dict under our
    names passes unchanged; one saved by a reference trainer is recognised, checked against ``model``
    and mapped (:func:`map_state_dict`)."""
    if not is_reference_state_dict(state_dict):
        return dict(state_dict)
    layout = detect_layout(state_dict)
    experts = getattr(model, "num_experts", None)
    if experts != layout.num_experts or model.num_classes != layout.num_classes:
        raise UserInputError(
            f"the pretrained file holds a {layout.describe()}, but the model has {experts} expert(s) and "
            f"{model.num_classes} classes: create {layout.model_name()} with {layout.model_kwargs()}")
    return map_state_dict(state_dict, model.state_dict(), layout)

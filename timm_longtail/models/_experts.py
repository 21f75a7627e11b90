"""Multi-expert machinery shared by RIDE and NCL++: trunk, experts, heads, router, forward modes.

A :class:`MultiExpertNet` is ``trunk -> n expert branches -> n heads``. RIDE shares the early
stages in the trunk and gives every expert channel-reduced later stages; NCL++ has an empty trunk
and n full networks. Both are served by the same forward modes:

``"ensemble"``
    mean of all experts' logits (the default for ``model(x)``).
``"expert:<i>"``
    expert ``i`` alone: trunk plus one branch, the cost of one network (NCL++ inference).
``"routed"``
    RIDE's dynamic expert assignment: experts are called in order and, after expert ``k``, a small
    learned router decides per sample whether expert ``k + 1`` is needed. The output is the mean of
    the experts used; :meth:`MultiExpertNet.forward_routed` also returns how many each sample used.

Select a mode once with ``model.set_forward_mode(mode)`` or per call with ``model(x, mode=...)``.
Training uses :meth:`MultiExpertNet.forward_train`, which runs every expert once and returns their
logits and pooled features together, so the losses never run an expert twice.

timm's feature API: ``forward_features`` returns the experts' final feature maps concatenated on
the channel axis (``num_experts * expert_dim`` channels; only the selected expert's in
``expert:<i>`` mode) and ``forward_head`` splits them again. ``features_only=True`` returns the
trunk's levels followed by the levels of expert 0 (or of the selected expert in ``expert:<i>``
mode), so a detector or segmenter sees one ordinary ResNet pyramid.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq

from ..errors import UserInputError

__all__ = ["CosineLinear", "ExpertHead", "ExpertRouter", "MultiExpertNet", "check_num_experts", "parse_forward_mode"]

ForwardMode = Tuple[str, Optional[int]]


def check_num_experts(num_experts: object) -> None:
    """The one rule on a multi-expert model's size (checked before its stages are built)."""
    if not isinstance(num_experts, int) or isinstance(num_experts, bool) or num_experts < 1:
        raise UserInputError(f"num_experts must be an integer >= 1, got {num_experts!r}")


def parse_forward_mode(mode: Union[str, int], num_experts: int, has_router: bool) -> ForwardMode:
    """Turn ``"ensemble" | "routed" | "expert:<i>" | <i>`` into ``(kind, expert_index)``."""
    if isinstance(mode, int) and not isinstance(mode, bool):
        mode = f"expert:{mode}"
    if not isinstance(mode, str):
        raise UserInputError(f"forward mode must be a string, got {mode!r}")
    text = mode.strip().lower()
    if text == "ensemble":
        return "ensemble", None
    if text == "routed":
        if not has_router:
            raise UserInputError("forward mode 'routed' needs a model with a router (a RIDE model with 2+ experts)")
        return "routed", None
    if text.startswith("expert:") or text.startswith("expert_"):
        index_text = text[len("expert:"):]
        if not index_text.isdigit():
            raise UserInputError(f"forward mode {mode!r}: expected 'expert:<index>', e.g. 'expert:0'")
        index = int(index_text)
        if index >= num_experts:
            raise UserInputError(
                f"forward mode {mode!r}: expert index {index} is out of range for a model with "
                f"{num_experts} expert(s) (valid: 0..{num_experts - 1})")
        return "expert", index
    raise UserInputError(
        f"unknown forward mode {mode!r}: use 'ensemble', 'expert:<i>' (0..{num_experts - 1})"
        + (" or 'routed'" if has_router else ""))


class CosineLinear(nn.Module):
    """Cosine classifier: ``z_c = s · cos(x, w_c) + b_c`` (bias optional, ``s`` fixed).

    RIDE uses it without bias and ``s = 30`` (the LDAM margin is applied on this scale); NCL++'s
    ImageNet-style heads add a learnable bias.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 30.0, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}, bias={self.bias is not None}"


class ExpertHead(nn.Module):
    """Global pool, dropout, classifier (linear or cosine) for one expert."""

    def __init__(
            self,
            in_features: int,
            num_classes: int,
            head_type: str = "linear",
            head_scale: float = 1.0,
            head_bias: bool = True,
            pool_type: str = "avg",
            drop_rate: float = 0.0,
    ):
        super().__init__()
        self.in_features, self.head_type, self.head_scale, self.head_bias = in_features, head_type, head_scale, head_bias
        self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._make_fc(num_classes)

    def _make_fc(self, num_classes: int) -> nn.Module:
        features = self.in_features * self.global_pool.feat_mult()
        if num_classes <= 0:
            return nn.Identity()
        if self.head_type == "cosine":
            return CosineLinear(features, num_classes, scale=self.head_scale, bias=self.head_bias)
        if self.head_type == "linear":
            return nn.Linear(features, num_classes, bias=self.head_bias)
        raise UserInputError(f"unknown head type {self.head_type!r}: use 'linear' or 'cosine'")

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
        self.fc = self._make_fc(num_classes)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(x)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(x))


class ExpertRouter(nn.Module):
    """RIDE's expert assignment: after expert ``k``, is expert ``k + 1`` worth calling?

    Router ``k`` sees the L2-normalised pooled feature ``f_k`` of expert ``k`` and the mean logits
    ``z̄_{0..k}`` of the experts used so far::

        h_k = ReLU(W1^(k) · f_k / ||f_k||)                (one W1 per router, 16-d)
        r_k = w2 · [h_k ; top_s(z̄_{0..k})] + b2          (w2 shared by the routers)

    and the next expert is called when ``sigmoid(r_k) > 0.5``. ``s`` (``top_k``) is clamped to the
    class count. The ``trained`` buffer records that the router stage has run, so routed inference
    on an untrained router fails loudly instead of routing at random.
    """

    def __init__(self, num_experts: int, feature_dim: int, num_classes: int, hidden_dim: int = 16, top_k: int = 30):
        super().__init__()
        self.num_routers = num_experts - 1
        self.top_k = max(1, min(top_k, num_classes))
        self.hidden = nn.ModuleList([nn.Linear(feature_dim, hidden_dim) for _ in range(self.num_routers)])
        self.out = nn.Linear(hidden_dim + self.top_k, 1)
        self.register_buffer("trained", torch.zeros((), dtype=torch.bool))

    def forward(self, index: int, feature: torch.Tensor, mean_logits: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.hidden[index](F.normalize(feature, dim=1)))
        top = mean_logits.topk(self.top_k, dim=1).values
        return self.out(torch.cat([hidden, top], dim=1)).squeeze(1)


class MultiExpertNet(nn.Module):
    """A shared trunk, ``num_experts`` expert branches, one head per expert, an optional router.

    Subclasses (RIDE, NCL++) build the trunk and the branches; everything about experts, heads,
    forward modes, routing and timm's feature API lives here, once.

    Args:
        trunk: shared early layers (``nn.Sequential``; empty for NCL++).
        experts: one ``nn.Sequential`` per expert, each ending in ``expert_dim`` channels.
        expert_dim: channels of every expert's final feature map.
        feature_info: timm feature info, trunk levels then expert-0 levels (``module`` names like
            ``trunk.layer1`` / ``experts.0.layer3``).
        router_top_k: build a RIDE router using the top-``k`` mean logits (``None``: no router).
    """

    def __init__(
            self,
            trunk: nn.Sequential,
            experts: Sequence[nn.Sequential],
            expert_dim: int,
            feature_info: List[Dict],
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            head_type: str = "linear",
            head_scale: float = 1.0,
            head_bias: bool = True,
            drop_rate: float = 0.0,
            router_top_k: Optional[int] = None,
            router_hidden_dim: int = 16,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_experts = len(experts)
        self.expert_dim = expert_dim
        self.num_features = self.head_hidden_size = expert_dim * self.num_experts
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.trunk = trunk
        self.experts = nn.ModuleList(experts)
        self.heads = nn.ModuleList([
            ExpertHead(expert_dim, num_classes, head_type, head_scale, head_bias, global_pool, drop_rate)
            for _ in range(self.num_experts)
        ])
        self._router_cfg = dict(hidden_dim=router_hidden_dim, top_k=router_top_k)
        self.router = self._make_router(num_classes)
        self.feature_info = feature_info
        self._trunk_taps = [i["module"].split(".", 1)[1] for i in feature_info if i["module"].startswith("trunk.")]
        self._expert_taps = [i["module"].split(".", 2)[2] for i in feature_info if i["module"].startswith("experts.")]
        self._mode: ForwardMode = ("ensemble", None)  # the one record of the mode; forward_mode names it
        self.grad_checkpointing = False

    def _make_router(self, num_classes: int) -> Optional[ExpertRouter]:
        top_k = self._router_cfg["top_k"]
        if top_k is None or self.num_experts < 2 or num_classes <= 0:
            return None
        return ExpertRouter(self.num_experts, self.expert_dim, num_classes, self._router_cfg["hidden_dim"], top_k)

    # ---- modes -------------------------------------------------------------------------------
    @property
    def has_router(self) -> bool:
        return self.router is not None

    @property
    def router_trained(self) -> bool:
        return self.router is not None and bool(self.router.trained)

    def mark_router_trained(self, trained: bool = True) -> None:
        """Record that the router stage has run (saved in the state dict)."""
        if self.router is None:
            raise UserInputError("this model has no router")
        self.router.trained.fill_(trained)

    def forward_modes(self) -> List[str]:
        """Every forward mode valid for this model (``routed`` only once the router is trained)."""
        modes = ["ensemble"] + [f"expert:{i}" for i in range(self.num_experts)]
        return modes + (["routed"] if self.router_trained else [])

    @property
    def forward_mode(self) -> str:
        """The mode ``model(x)`` uses, by name: ``'ensemble'``, ``'expert:<i>'`` or ``'routed'``."""
        kind, index = self._mode
        return f"expert:{index}" if kind == "expert" else kind

    def set_forward_mode(self, mode: Union[str, int]) -> "MultiExpertNet":
        """Set the mode ``model(x)`` uses: ``'ensemble'``, ``'expert:<i>'`` or ``'routed'``."""
        self._mode = parse_forward_mode(mode, self.num_experts, self.has_router)
        return self

    def _resolve(self, mode: Optional[Union[str, int]]) -> ForwardMode:
        return self._mode if mode is None else parse_forward_mode(mode, self.num_experts, self.has_router)

    # ---- timm classifier API -----------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        """Every expert's classifier, as one ``ModuleList``."""
        return nn.ModuleList([head.fc for head in self.heads])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Re-create every expert's classifier (and the router, which depends on the classes)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        for head in self.heads:
            head.reset(num_classes, global_pool)
        self.router = self._make_router(num_classes)
        if self._mode[0] == "routed" and self.router is None:
            self.set_forward_mode("ensemble")

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict:
        return dict(stem=r"^trunk\.(conv1|bn1)|^experts\.\d+\.(conv1|bn1)", blocks=r"^trunk\.layer(\d+)|^experts\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the trunk's and the experts' stages in the backward pass instead of keeping
        their activations (timm's ``checkpoint_seq``, as its ResNet); timm's ``--grad-checkpointing``."""
        self.grad_checkpointing = enable

    # ---- forward -----------------------------------------------------------------------------
    def _stages(self, stages: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """Run the trunk or one expert; with gradient checkpointing (training), each residual stage's
        blocks are checkpointed and the stem runs plainly, as timm's ResNet (its in-place ReLU must
        not modify a checkpointed input)."""
        if not (self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()):
            return stages(x)
        for child in stages:
            x = checkpoint_seq(child, x) if isinstance(child, nn.Sequential) else child(x)
        return x

    def _run_expert(self, index: int, trunk_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Expert ``index`` on trunk output: (pooled feature, logits)."""
        head = self.heads[index]
        pooled = head.pool(self._stages(self.experts[index], trunk_out))
        return pooled, head.classify(pooled)

    def _selected_experts(self, kind: str, index: Optional[int]) -> List[int]:
        return [index] if kind == "expert" else list(range(self.num_experts))

    def forward_features(self, x: torch.Tensor, mode: Optional[Union[str, int]] = None) -> torch.Tensor:
        """Final feature maps of the experts the mode uses, concatenated on channels."""
        kind, index = self._resolve(mode)
        trunk_out = self._stages(self.trunk, x)
        maps = [self._stages(self.experts[i], trunk_out) for i in self._selected_experts(kind, index)]
        return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False, mode: Optional[Union[str, int]] = None) -> torch.Tensor:
        """Pool and classify ``forward_features`` output; ``pre_logits`` gives the pooled features."""
        kind, index = self._resolve(mode)
        chunks = x.split(self.expert_dim, dim=1)
        if len(chunks) == self.num_experts:
            indices = list(range(self.num_experts))
        elif len(chunks) == 1 and kind == "expert":
            indices = [index]
        else:
            raise UserInputError(
                f"forward_head got {x.shape[1]} channels: expected {self.num_features} (all experts) "
                f"or {self.expert_dim} (one expert, in an 'expert:<i>' mode)")
        pooled = [self.heads[i].pool(c) for i, c in zip(indices, chunks)]
        if pre_logits:
            return torch.cat(pooled, dim=1)
        logits = torch.stack([self.heads[i].classify(p) for i, p in zip(indices, pooled)])
        if kind == "routed":
            return self.route_from_outputs(torch.stack(pooled), logits)[0]
        return logits.mean(0)

    def forward(self, x: torch.Tensor, mode: Optional[Union[str, int]] = None) -> torch.Tensor:
        kind, index = self._resolve(mode)
        if kind == "routed":
            return self.forward_routed(x)[0]
        if self.num_classes <= 0:  # classifier removed: pooled features, concatenated (timm's convention)
            return self.forward_head(self.forward_features(x, mode), pre_logits=True, mode=mode)
        trunk_out = self._stages(self.trunk, x)
        logits = [self._run_expert(i, trunk_out)[1] for i in self._selected_experts(kind, index)]
        return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)

    def forward_train(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """All experts in one pass: ``logits`` (E, B, C) and pooled ``features`` (E, B, D)."""
        trunk_out = self._stages(self.trunk, x)
        outputs = [self._run_expert(i, trunk_out) for i in range(self.num_experts)]
        return dict(
            features=torch.stack([feature for feature, _ in outputs]),
            logits=torch.stack([logit for _, logit in outputs]),
        )

    # ---- routing -----------------------------------------------------------------------------
    def forward_router(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Raw router logits (E-1, B) from every expert's pooled features and logits.

        Router ``k`` sees expert ``k``'s feature and the mean logits of experts ``0..k``; training
        computes all of them at once, inference (:meth:`forward_routed`) only those it reaches.
        """
        if self.router is None:
            raise UserInputError("this model has no router")
        cumulative_mean = logits.cumsum(0) / torch.arange(1, logits.shape[0] + 1, device=logits.device).view(-1, 1, 1)
        return torch.stack([self.router(k, features[k], cumulative_mean[k]) for k in range(self.num_experts - 1)])

    def _check_router(self, force: Optional[bool]) -> None:
        if self.router is None:
            raise UserInputError("forward mode 'routed' needs a model with a router (a RIDE model with 2+ experts)")
        if force is None and not self.router_trained:
            raise UserInputError(
                "this model's router has never been trained, so 'routed' mode would route at random: "
                "train it with `train.py --method ride --stage router`, or use 'ensemble' / 'expert:<i>'")

    def route_from_outputs(
            self, features: torch.Tensor, logits: torch.Tensor, force: Optional[bool] = None, threshold: float = 0.5,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Routed prediction given every expert's outputs (the reference for :meth:`forward_routed`)."""
        self._check_router(force)
        num_experts, batch = logits.shape[:2]
        if force is None:
            go_on = torch.sigmoid(self.forward_router(features, logits)) > threshold  # (E-1, B)
        else:
            go_on = torch.full((num_experts - 1, batch), force, dtype=torch.bool, device=logits.device)
        # an expert is used while every earlier router said "go on"
        reached = torch.cat([torch.ones(1, batch, dtype=torch.bool, device=logits.device), go_on.cumprod(0).bool()])
        used = reached.sum(0)
        out = (logits * reached.unsqueeze(-1)).sum(0) / used.unsqueeze(1)
        return out, used

    def forward_routed(
            self, x: torch.Tensor, force: Optional[bool] = None, threshold: float = 0.5,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """RIDE inference: run expert ``k + 1`` only on the samples whose router asks for it.

        Returns the mean logits of the experts each sample used, and how many it used (1..E).
        ``force=True``/``False`` bypasses the router (every expert / expert 0 only).
        """
        self._check_router(force)
        trunk_out = self._stages(self.trunk, x)
        feature, logit = self._run_expert(0, trunk_out)
        logit_sum = logit.clone()
        used = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        active = torch.arange(x.shape[0], device=x.device)
        for k in range(self.num_experts - 1):
            if force is None:
                mean_logits = logit_sum[active] / used[active].unsqueeze(1).to(logit_sum.dtype)
                go_on = torch.sigmoid(self.router(k, feature, mean_logits)) > threshold
            else:
                go_on = torch.full((active.numel(),), force, dtype=torch.bool, device=x.device)
            active = active[go_on]
            if active.numel() == 0:
                break
            feature, logit = self._run_expert(k + 1, trunk_out[active])
            logit_sum = logit_sum.index_add(0, active, logit.to(logit_sum.dtype))
            used = used.index_add(0, active, torch.ones_like(active))
        return logit_sum / used.unsqueeze(1).to(logit_sum.dtype), used

    # ---- features_only -----------------------------------------------------------------------
    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Trunk levels, then the levels of expert 0 (or of the selected expert in 'expert:<i>'), in
        one pass; with the final features (``forward_features`` of the mode) unless ``intermediates_only``.
        ``stop_early`` only stops early with ``intermediates_only``: the final features need every stage."""
        if output_fmt != "NCHW":
            raise UserInputError("output_fmt must be 'NCHW'")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        kind, index = self._mode
        tapped = index if kind == "expert" else 0
        stages = [(m, n in self._trunk_taps, True) for n, m in self.trunk.named_children()]
        stages += [(m, n in self._expert_taps, False) for n, m in self.experts[tapped].named_children()]
        intermediates, level, out, trunk_out = [], 0, x, x
        for module, is_tap, in_trunk in stages:
            out = module(out)
            if in_trunk:
                trunk_out = out
            if is_tap:
                if level in take_indices:
                    intermediates.append(out)
                level += 1
                if intermediates_only and level > max_index:
                    return intermediates
        if intermediates_only:
            return intermediates
        maps = [out if i == tapped else self._stages(self.experts[i], trunk_out)
                for i in self._selected_experts(kind, index)]
        return (maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)), intermediates

    # ---- utilities ---------------------------------------------------------------------------
    def load_backbone_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> int:
        """Load a plain timm/torchvision ResNet state dict into the trunk and every expert.

        Keys are matched by name (``layer3.0.conv1.weight`` -> ``experts.<i>.layer3.0.conv1.weight``)
        and copied where shapes agree: how ImageNet-pretrained backbones seed these models (e.g.
        NCL++'s Places-LT recipe). Returns the number of tensors loaded.
        """
        own = self.state_dict()
        loaded = {}
        for key, value in state_dict.items():
            for prefix in ["trunk."] + [f"experts.{i}." for i in range(self.num_experts)]:
                target = prefix + key
                if target in own and own[target].shape == value.shape:
                    loaded[target] = value
        self.load_state_dict(loaded, strict=False)
        return len(loaded)

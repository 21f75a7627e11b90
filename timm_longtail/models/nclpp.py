"""NCL++: nested collaborative learning for long-tailed recognition (Tan et al.; NCL, CVPR 2022).

K complete networks (nothing shared), trained together so that each single expert becomes strong:
at test time one expert (``forward_mode='expert:0'``) costs one backbone, the ensemble of all is
better still. CIFAR ResNet-32 experts end in a linear head with bias; ImageNet-style experts end
in a cosine head with a learnable bias, ``z = s · cos(x, w) + b``, s = 16 (ImageNet-LT; 32 for
iNaturalist, set ``head_scale=32``). The scale is stored with the weights.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Sequence

from timm.models import generate_default_cfgs, register_model

from ._backbones import build_resnet_stages, split_trunk_and_experts
from ._cfgs import lt_cfg
from ._builder import create_lt_model
from ._experts import MultiExpertNet, check_num_experts
from ._init import init_weights
from .weights import with_published_weights

__all__ = ["NCLPPResNet"]


class NCLPPResNet(MultiExpertNet):
    """``num_experts`` full ResNets side by side, one head each (an empty trunk).

    Args:
        layers: blocks per stage.
        stem: ``'cifar'`` (ResNet-32, widths 16/32/64) or ``'imagenet'`` (standard widths).
        num_experts: K, 2 by default (the NCL++ paper's setting).
        head_type / head_scale / head_bias: classifier of every expert.
        weight_init: ``'reference'`` (NCL's code, the zoo's recipe) or ``'timm'`` (see ``_init.py``).
    """

    def __init__(
            self,
            layers: Sequence[int],
            stem: str = "imagenet",
            block: str = "bottleneck",
            num_experts: int = 2,
            cardinality: int = 1,
            base_width: int = 64,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            head_type: str = "cosine",
            head_scale: float = 16.0,
            head_bias: bool = True,
            drop_rate: float = 0.0,
            weight_init: str = "reference",
    ):
        check_num_experts(num_experts)
        widths = (16, 32, 64) if stem == "cifar" else (64, 128, 256, 512)
        build = partial(build_resnet_stages, stem, layers, widths, in_chans, block, cardinality, base_width)
        trunk, experts, expert_dim, feature_info = split_trunk_and_experts(build, num_experts, trunk_names=())
        super().__init__(
            trunk, experts, expert_dim, feature_info,
            num_classes=num_classes, in_chans=in_chans, global_pool=global_pool,
            head_type=head_type, head_scale=head_scale, head_bias=head_bias, drop_rate=drop_rate,
        )
        init_weights(self, weight_init, reference="nclpp", stem=stem)


def _create_nclpp(variant: str, pretrained: bool = False, **kwargs: Any) -> NCLPPResNet:
    return create_lt_model(NCLPPResNet, variant, pretrained, **kwargs)


def _cfg(model_name: str, tag: str) -> Dict[str, Any]:
    return lt_cfg(
        model_name, tag,
        first_conv=tuple(f"experts.{i}.conv1" for i in range(2)),
        classifier=tuple(f"heads.{i}.fc" for i in range(2)),
        paper_ids="arXiv:2306.16709",
        paper_name="NCL++: Nested Collaborative Learning for Long-Tailed Visual Recognition",
    )


# the alias nclpp_resnext50 shares nclpp_resnext50_32x4d's weights (HUB_NAME_ALIASES in _cfgs.py)
default_cfgs = generate_default_cfgs(with_published_weights({
    **{f"nclpp_resnet32.{tag}": _cfg("nclpp_resnet32", tag)
       for tag in ("cifar100_lt_if100", "cifar100_lt_if50", "cifar10_lt_if100", "cifar10_lt_if50",
                   "e200c2_cifar10_lt_if100")},
    **{f"nclpp_resnet50.{tag}": _cfg("nclpp_resnet50", tag) for tag in ("imagenet_lt", "inat2018")},
    "nclpp_resnext50_32x4d.imagenet_lt": _cfg("nclpp_resnext50_32x4d", "imagenet_lt"),
    "nclpp_resnext50.imagenet_lt": _cfg("nclpp_resnext50", "imagenet_lt"),
    "nclpp_resnet152.places_lt": _cfg("nclpp_resnet152", "places_lt"),
}))


@register_model
def nclpp_resnet32(pretrained: bool = False, **kwargs) -> NCLPPResNet:
    """NCL++ with K CIFAR ResNet-32 experts (16/32/64, linear heads)."""
    model_args = dict(layers=(5, 5, 5), stem="cifar", block="basic", head_type="linear", head_scale=1.0)
    return _create_nclpp("nclpp_resnet32", pretrained, **dict(model_args, **kwargs))


@register_model
def nclpp_resnet50(pretrained: bool = False, **kwargs) -> NCLPPResNet:
    """NCL++ with K ResNet-50 experts, cosine heads with bias (s = 16)."""
    model_args = dict(layers=(3, 4, 6, 3), block="bottleneck")
    return _create_nclpp("nclpp_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def nclpp_resnext50_32x4d(pretrained: bool = False, **kwargs) -> NCLPPResNet:
    """NCL++ with K ResNeXt-50 (32x4d) experts, cosine heads with bias (s = 16)."""
    model_args = dict(layers=(3, 4, 6, 3), block="bottleneck", cardinality=32, base_width=4)
    return _create_nclpp("nclpp_resnext50_32x4d", pretrained, **dict(model_args, **kwargs))


@register_model
def nclpp_resnext50(pretrained: bool = False, **kwargs) -> NCLPPResNet:
    """Alias of ``nclpp_resnext50_32x4d`` (the name the NCL++ paper uses)."""
    model_args = dict(layers=(3, 4, 6, 3), block="bottleneck", cardinality=32, base_width=4)
    return _create_nclpp("nclpp_resnext50", pretrained, **dict(model_args, **kwargs))


@register_model
def nclpp_resnet152(pretrained: bool = False, **kwargs) -> NCLPPResNet:
    """NCL++ with K ResNet-152 experts, cosine heads with bias (Places-LT recipe)."""
    model_args = dict(layers=(3, 8, 36, 3), block="bottleneck")
    return _create_nclpp("nclpp_resnet152", pretrained, **dict(model_args, **kwargs))

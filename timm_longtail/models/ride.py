"""RIDE: Long-tailed Recognition by Routing Diverse Distribution-Aware Experts (Wang et al., ICLR 2021).

A ResNet split in two: the stem and early stages are shared (the trunk), the later stages are
copied once per expert with fewer channels (CIFAR ResNet-32: 24/48 instead of 32/64; ImageNet
ResNets: 192/384 planes instead of 256/512), and every expert ends in a cosine classifier scaled
by s = 30 (LDAM's scale). With 2+ experts a small router (:class:`ExpertRouter`) learns in a second
stage which samples need more experts; ``forward_mode='routed'`` uses it at test time.

Differences from the reference code, on purpose: global average pooling instead of a fixed 7x7
(any input size works); option-A shortcuts pad the new channels evenly on both sides.
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

__all__ = ["RIDEResNet"]


class RIDEResNet(MultiExpertNet):
    """RIDE ResNet: shared early stages, ``num_experts`` reduced-width later stages, cosine heads.

    Args:
        layers: blocks per stage (``(5, 5, 5)`` for ResNet-32, ``(3, 4, 6, 3)`` for ResNet-50).
        stem: ``'cifar'`` (3x3 stem, option-A blocks, trunk = stem + stage 1) or ``'imagenet'``
            (7x7 stem + max-pool, timm blocks, trunk = stem + stages 1-2).
        num_experts: number of expert branches (1 with ``reduce_dimension=False`` is the plain
            LDAM-DRW ResNet).
        reduce_dimension: use RIDE's reduced expert widths.
        head_scale: ``s`` of the cosine heads.
        router_top_k: how many of the mean logits the router sees (clamped to the class count).
        weight_init: ``'reference'`` (RIDE's code, the zoo's recipe) or ``'timm'`` (see ``_init.py``).
    """

    def __init__(
            self,
            layers: Sequence[int],
            stem: str = "imagenet",
            block: str = "bottleneck",
            num_experts: int = 3,
            reduce_dimension: bool = True,
            cardinality: int = 1,
            base_width: int = 64,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            head_scale: float = 30.0,
            router_top_k: int = 30,
            router_hidden_dim: int = 16,
            drop_rate: float = 0.0,
            weight_init: str = "reference",
    ):
        check_num_experts(num_experts)
        if stem == "cifar":
            widths = (16, 24, 48) if reduce_dimension else (16, 32, 64)
            trunk_names = ("conv1", "bn1", "act1", "layer1")
        else:
            widths = (64, 128, 192, 384) if reduce_dimension else (64, 128, 256, 512)
            trunk_names = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2")
        build = partial(build_resnet_stages, stem, layers, widths, in_chans, block, cardinality, base_width)
        trunk, experts, expert_dim, feature_info = split_trunk_and_experts(build, num_experts, trunk_names)
        super().__init__(
            trunk, experts, expert_dim, feature_info,
            num_classes=num_classes, in_chans=in_chans, global_pool=global_pool,
            head_type="cosine", head_scale=head_scale, head_bias=False, drop_rate=drop_rate,
            router_top_k=router_top_k, router_hidden_dim=router_hidden_dim,
        )
        init_weights(self, weight_init, reference="ride", stem=stem)


def _create_ride(variant: str, pretrained: bool = False, **kwargs: Any) -> RIDEResNet:
    return create_lt_model(RIDEResNet, variant, pretrained, **kwargs)


def _cfg(model_name: str, tag: str, num_experts: int) -> Dict[str, Any]:
    return lt_cfg(
        model_name, tag,
        first_conv=("trunk.conv1",),
        classifier=tuple(f"heads.{i}.fc" for i in range(num_experts)),
        paper_ids="arXiv:2010.01809",
        paper_name="Long-tailed Recognition by Routing Diverse Distribution-Aware Experts",
    )


_TAGS = {
    "resnet32": ("cifar100_lt_if100", "cifar10_lt_if100", "distill_cifar10_lt_if100"),
    "resnet50": ("imagenet_lt", "inat2018"),
    "resnext50_32x4d": ("imagenet_lt",),
    "resnet152": ("imagenet_lt", "places_lt"),
}

default_cfgs = generate_default_cfgs(with_published_weights({
    f"ride_{arch}_{n}e.{tag}": _cfg(f"ride_{arch}_{n}e", tag, n)
    for arch, tags in _TAGS.items() for n in (2, 3, 4, 6) for tag in tags
}))

@register_model
def ride_resnet32_2e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-32 (CIFAR), 2 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(5, 5, 5), stem='cifar', block='basic', router_top_k=30, num_experts=2)
    return _create_ride("ride_resnet32_2e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet32_3e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-32 (CIFAR), 3 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(5, 5, 5), stem='cifar', block='basic', router_top_k=30, num_experts=3)
    return _create_ride("ride_resnet32_3e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet32_4e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-32 (CIFAR), 4 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(5, 5, 5), stem='cifar', block='basic', router_top_k=30, num_experts=4)
    return _create_ride("ride_resnet32_4e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet32_6e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-32 (CIFAR), 6 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(5, 5, 5), stem='cifar', block='basic', router_top_k=30, num_experts=6)
    return _create_ride("ride_resnet32_6e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet50_2e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-50, 2 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', router_top_k=50, num_experts=2)
    return _create_ride("ride_resnet50_2e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet50_3e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-50, 3 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', router_top_k=50, num_experts=3)
    return _create_ride("ride_resnet50_3e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet50_4e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-50, 4 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', router_top_k=50, num_experts=4)
    return _create_ride("ride_resnet50_4e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet50_6e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-50, 6 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', router_top_k=50, num_experts=6)
    return _create_ride("ride_resnet50_6e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnext50_32x4d_2e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNeXt-50 (32x4d), 2 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', cardinality=32, base_width=4, router_top_k=50, num_experts=2)
    return _create_ride("ride_resnext50_32x4d_2e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnext50_32x4d_3e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNeXt-50 (32x4d), 3 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', cardinality=32, base_width=4, router_top_k=50, num_experts=3)
    return _create_ride("ride_resnext50_32x4d_3e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnext50_32x4d_4e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNeXt-50 (32x4d), 4 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', cardinality=32, base_width=4, router_top_k=50, num_experts=4)
    return _create_ride("ride_resnext50_32x4d_4e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnext50_32x4d_6e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNeXt-50 (32x4d), 6 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 4, 6, 3), block='bottleneck', cardinality=32, base_width=4, router_top_k=50, num_experts=6)
    return _create_ride("ride_resnext50_32x4d_6e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet152_2e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-152, 2 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 8, 36, 3), block='bottleneck', router_top_k=50, num_experts=2)
    return _create_ride("ride_resnet152_2e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet152_3e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-152, 3 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 8, 36, 3), block='bottleneck', router_top_k=50, num_experts=3)
    return _create_ride("ride_resnet152_3e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet152_4e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-152, 4 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 8, 36, 3), block='bottleneck', router_top_k=50, num_experts=4)
    return _create_ride("ride_resnet152_4e", pretrained, **dict(model_args, **kwargs))

@register_model
def ride_resnet152_6e(pretrained: bool = False, **kwargs) -> RIDEResNet:
    """RIDE ResNet-152, 6 experts with channel-reduced later stages, cosine heads (s = 30)."""
    model_args = dict(layers=(3, 8, 36, 3), block='bottleneck', router_top_k=50, num_experts=6)
    return _create_ride("ride_resnet152_6e", pretrained, **dict(model_args, **kwargs))

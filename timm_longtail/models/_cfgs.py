"""Pretrained-config helpers shared by the model files: the Hub organisation and dataset tags."""
from __future__ import annotations

from typing import Any, Dict, Tuple

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ["HF_ORG", "DATASET_TAGS", "lt_cfg"]

HF_ORG = "timm-longtail"
"""Hub organisation holding every ``<model>.<tag>`` weight repo."""

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the CIFAR-10 statistics RIDE/LDAM use for CIFAR-100 too
CIFAR_STD = (0.2023, 0.1994, 0.2010)

_CIFAR = dict(input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, mean=CIFAR_MEAN, std=CIFAR_STD,
              interpolation="bilinear")
_IMAGENET = dict(input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875, mean=IMAGENET_DEFAULT_MEAN,
                 std=IMAGENET_DEFAULT_STD, interpolation="bilinear")

DATASET_TAGS: Dict[str, Dict[str, Any]] = {
    "cifar100_lt_if100": dict(num_classes=100, **_CIFAR),
    "cifar100_lt_if50": dict(num_classes=100, **_CIFAR),
    "cifar10_lt_if100": dict(num_classes=10, **_CIFAR),
    "cifar10_lt_if50": dict(num_classes=10, **_CIFAR),
    "imagenet_lt": dict(num_classes=1000, **_IMAGENET),
    "inat2018": dict(num_classes=8142, **_IMAGENET),
    "places_lt": dict(num_classes=365, **_IMAGENET),
}


def lt_cfg(model_name: str, tag: str, first_conv: Tuple[str, ...], classifier: Tuple[str, ...], **overrides) -> Dict[str, Any]:
    """A timm pretrained cfg for ``<model_name>.<tag>``, pointing at ``HF_ORG/<model_name>.<tag>``."""
    cfg = dict(
        url="", hf_hub_id=f"{HF_ORG}/{model_name}.{tag}", license="apache-2.0",
        first_conv=first_conv if len(first_conv) > 1 else first_conv[0],
        classifier=classifier if len(classifier) > 1 else classifier[0],
        **DATASET_TAGS[tag],
    )
    cfg.update(overrides)
    return cfg

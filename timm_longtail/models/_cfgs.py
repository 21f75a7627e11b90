"""Pretrained-config helpers shared by the model files: the Hub organisation, repo names and dataset tags."""
from __future__ import annotations

from typing import Any, Dict, Tuple

from ..data.benchmarks import BENCHMARKS

__all__ = ["HF_ORG", "DATASET_TAGS", "HUB_NAME_ALIASES", "dataset_tag", "hub_name", "hub_repo_id", "lt_cfg"]

HF_ORG = "timm-longtail"
"""Hub organisation holding every ``<model>.<tag>`` weight repo."""

HUB_NAME_ALIASES: Dict[str, str] = {"nclpp_resnext50": "nclpp_resnext50_32x4d"}
"""Registered aliases -> the model whose weights (table entry, Hub repo, ``hub_cards/`` folder) they share."""

DATASET_TAGS: Dict[str, Dict[str, Any]] = {
    tag: row.pretrained_cfg() for row in BENCHMARKS.values() for tag in row.registered_tags}
"""Pretrained tag -> the data part of its cfg, from the dataset table (``data/benchmarks.py``)."""


def dataset_tag(tag: str) -> str:
    """The dataset part of a pretrained tag: the tag itself, or what follows a recipe prefix.

    As in timm (``resnet50.a1_in1k``), a tag may name the recipe before the dataset:
    ``distill_cifar10_lt_if100`` is CIFAR-10-LT (IF 100) trained with distillation.
    """
    if tag in DATASET_TAGS:
        return tag
    for key in sorted(DATASET_TAGS, key=len, reverse=True):
        if tag.endswith(f"_{key}"):
            return key
    raise KeyError(f"tag {tag!r} names no dataset of {sorted(DATASET_TAGS)}")


def hub_name(model_name: str, tag: str) -> str:
    """``<model>.<tag>`` of the weights a registered name uses (an alias shares its canonical model's)."""
    return f"{HUB_NAME_ALIASES.get(model_name, model_name)}.{tag}"


def hub_repo_id(model_name: str, tag: str) -> str:
    """``timm-longtail/<model>.<tag>``: where the weights of ``model_name`` trained on ``tag`` go on the Hub.

    Computed from the name, so it exists for every tag, published or not (export and push use it).
    """
    return f"{HF_ORG}/{hub_name(model_name, tag)}"


def lt_cfg(model_name: str, tag: str, first_conv: Tuple[str, ...], classifier: Tuple[str, ...], **overrides) -> Dict[str, Any]:
    """A timm pretrained cfg for ``<model_name>.<tag>``: classes, input size and normalisation of the tag.

    It has no weight source: :func:`timm_longtail.models.weights.with_published_weights` adds the
    ``hf_hub_id`` to the cfgs whose weights are published, so timm's ``has_weights`` (and
    ``list_pretrained``) is true for those only.
    """
    cfg = dict(
        url="", license="apache-2.0",
        first_conv=first_conv if len(first_conv) > 1 else first_conv[0],
        classifier=classifier if len(classifier) > 1 else classifier[0],
        **DATASET_TAGS[dataset_tag(tag)],
    )
    cfg.update(overrides)
    return cfg

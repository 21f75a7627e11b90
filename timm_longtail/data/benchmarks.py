"""The datasets this package knows by name, one row each: the one home of their facts.

Model cfgs (``models/_cfgs.py``: classes, input size, normalisation per pretrained tag), training
(``training/assembly.py``: which recipes and draws apply), export (``hub/export.py``: which tags name a
benchmark) and the loaders (``data/sources.py``: where the images and labels are) all read this table.
A user's ``folder`` dataset has no row: its classes and images are whatever the folder holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ["BENCHMARKS", "CIFAR_MEAN", "CIFAR_STD", "Benchmark", "SEEDED_LONGTAIL", "SMALL_IMAGE_DATASETS"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the CIFAR-10 statistics RIDE/LDAM use for CIFAR-100 and Tiny-ImageNet too
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class Benchmark:
    """One dataset's fixed facts."""

    name: str
    """Canonical name (``--dataset``, checkpoints' ``dataset.name``)."""
    title: str
    num_classes: int
    image_size: int
    """The side the reference code trains and tests at (32 for CIFAR, the images' 64 for Tiny-ImageNet, 224)."""
    test_split: str
    """The source's split behind the figures papers report: what ``split="test"`` reads (iNaturalist 2018 has
    no labelled test set; its papers test on ``val``; Tiny-ImageNet's labelled held-out split is ``validation``)."""
    default_imbalance: Optional[float] = None
    """A long tail built from a balanced set: the imbalance factor when none is given. None: a fixed split."""
    tag_imbalances: Tuple[float, ...] = ()
    """Imbalance factors with registered pretrained tags (``<name>_if<IF>``); a fixed split's tag is its name."""
    seeded_draw: bool = False
    """Its long-tailed training subset is a seeded random draw (``--longtail-seed``); else deterministic."""
    aliases: Tuple[str, ...] = ()
    is_benchmark: bool = True
    """A benchmark papers report on: a tag naming it claims its figures (export checks the weights' data)."""
    source: Dict[str, Any] = field(default_factory=dict)
    """Where the loader finds it: ``hub_id`` / ``label_column`` (parquet) or ``list_prefix`` (split lists)."""

    @property
    def small_images(self) -> bool:
        """Trained with the CIFAR recipes (random crop with padding, no resizing) at the images' own size."""
        return self.image_size < 224

    @property
    def constructed(self) -> bool:
        """The long tail is built with an imbalance factor (and a tag names that factor)."""
        return self.default_imbalance is not None

    @property
    def mean(self) -> Tuple[float, float, float]:
        return CIFAR_MEAN if self.small_images else IMAGENET_DEFAULT_MEAN

    @property
    def std(self) -> Tuple[float, float, float]:
        return CIFAR_STD if self.small_images else IMAGENET_DEFAULT_STD

    def tag(self, imbalance_factor: Optional[float] = None) -> str:
        """The dataset part of a pretrained tag: ``cifar100_lt_if100`` (constructed), ``imagenet_lt`` (fixed)."""
        if not self.constructed:
            return self.name
        return f"{self.name}_if{float(self.default_imbalance if imbalance_factor is None else imbalance_factor):g}"

    @property
    def registered_tags(self) -> Tuple[str, ...]:
        """The pretrained tags model files may use for it (``models/_cfgs.py``'s ``DATASET_TAGS``)."""
        if not self.is_benchmark:
            return ()
        return tuple(self.tag(factor) for factor in self.tag_imbalances) if self.constructed else (self.name,)

    def pretrained_cfg(self) -> Dict[str, Any]:
        """The data part of a timm pretrained cfg for weights trained on it (CIFAR ResNets pool 8x8 at 32 px)."""
        small = self.small_images
        return dict(num_classes=self.num_classes, input_size=(3, self.image_size, self.image_size),
                    pool_size=(self.image_size // 4,) * 2 if small else (self.image_size // 32,) * 2,
                    crop_pct=1.0 if small else 0.875, mean=self.mean, std=self.std, interpolation="bilinear")


_ROWS = (
    Benchmark("cifar10_lt", "CIFAR-10-LT", 10, 32, "test", default_imbalance=100.0, tag_imbalances=(100.0, 50.0),
              seeded_draw=True, aliases=("cifar10",), source=dict(hub_id="uoft-cs/cifar10", label_column="label")),
    Benchmark("cifar100_lt", "CIFAR-100-LT", 100, 32, "test", default_imbalance=100.0, tag_imbalances=(100.0, 50.0),
              seeded_draw=True, aliases=("cifar100",),
              source=dict(hub_id="uoft-cs/cifar100", label_column="fine_label")),
    Benchmark("tiny_imagenet_lt", "Tiny-ImageNet-LT", 200, 64, "validation", default_imbalance=100.0,
              aliases=("tinyimagenet_lt", "tiny_imagenet")),
    Benchmark("imagenet_lt", "ImageNet-LT", 1000, 224, "test", source=dict(list_prefix="ImageNet_LT")),
    Benchmark("places_lt", "Places-LT", 365, 224, "test", source=dict(list_prefix="Places_LT")),
    Benchmark("inat2018", "iNaturalist 2018", 8142, 224, "val", aliases=("inaturalist2018", "inaturalist_2018", "inaturalist18", "inat"),
              source=dict(list_prefix="iNaturalist18")),
    Benchmark("demo", "the demo set", 10, 32, "test", is_benchmark=False),
)
BENCHMARKS: Dict[str, Benchmark] = {row.name: row for row in _ROWS}

SMALL_IMAGE_DATASETS = tuple(name for name, row in BENCHMARKS.items() if row.small_images)
SEEDED_LONGTAIL = tuple(name for name, row in BENCHMARKS.items() if row.seeded_draw) + ("folder",)
"""Datasets whose long-tailed training subset is a seeded draw (a user's folder is subsampled the same way)."""

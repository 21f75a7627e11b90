"""What a reference repository's CUDA training code needs to run unchanged on this CPU and on the
shared CIFAR-10 parquet: shared by ``reference_ldam_drw.py`` and ``reference_ride.py``.

Measurement tooling, not part of the package. Every shim leaves the reference's arithmetic alone:
CUDA calls become no-ops, ``torch.load`` maps to the CPU, torchvision's ``CIFAR10`` reads the same
50,000 / 10,000 rows in the original order from the parquet (so the reference's own
``IMBALANCECIFAR10`` draws its long-tailed subset itself), and channels-last is a memory layout.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import timm_longtail  # noqa: F401  before torchvision: the CPU shim
import torch
import torch.nn as nn
import torchvision

from timm_longtail.data.sources import _decode_rows, _find_columns, _labels, _load_parquet_split

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def cuda_calls_on_cpu(trusted_dirs: tuple[Path, ...] = ()) -> None:
    """``.cuda()`` returns its receiver, ``torch.load`` maps to the CPU. A file under one of
    ``trusted_dirs`` (this run's own checkpoints, which pickle the reference's config object) loads
    with ``weights_only=False``; any other keeps torch's safe default."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.FloatTensor = torch.FloatTensor
    torch.cuda.set_device = lambda *a, **k: None
    load = torch.load
    trusted = tuple(Path(d).resolve() for d in trusted_dirs)

    def load_on_cpu(f, *a, map_location=None, **k):
        if isinstance(f, (str, os.PathLike)) and any(Path(f).resolve().is_relative_to(d) for d in trusted):
            k.setdefault("weights_only", False)
        return load(f, *a, map_location="cpu", **k)
    torch.load = load_on_cpu


def cifar10_from_parquet(data: str | Path = DEFAULT_DATA) -> None:
    """torchvision's ``CIFAR10(root, train=...)`` reads the shared parquet: uint8 HWC ``data`` and
    int ``targets`` in the original row order, as the pickled original gives them."""
    cache: dict = {}

    def cifar_init(self, root, train=True, transform=None, target_transform=None, download=False):
        split = "train" if train else "test"
        if split not in cache:
            ds = _load_parquet_split(str(data), [split], None, split, "CIFAR-10")
            image_column, label_column = _find_columns(ds, "label")
            cache[split] = (_decode_rows(ds, image_column, np.arange(len(ds)), split), _labels(ds, label_column).tolist())
        self.root, self.train, self.transform, self.target_transform = root, train, transform, target_transform
        self.data, self.targets = cache[split][0].copy(), list(cache[split][1])
        self.classes = [str(i) for i in range(10)]
    torchvision.datasets.CIFAR10.__init__ = cifar_init


def channels_last(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``build`` whose model runs channels-last: the same arithmetic, faster on this CPU."""
    def build_channels_last(*a, **k):
        model = build(*a, **k).to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(lambda mod, args: (args[0].contiguous(memory_format=torch.channels_last), *args[1:]))
        return model
    return build_channels_last


def seed_everything(seed: int) -> None:
    """Python, numpy and torch global generators, for code that seeds none itself."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class MetricTracker:
    """Stands in for RIDE's ``utils.MetricTracker`` (logging only): the same running totals and
    averages per key, in a dict, because its in-place writes into a pandas frame are read-only
    under pandas 3's copy-on-write."""

    def __init__(self, *keys, writer=None):
        self.writer, self.keys = writer, keys
        self.reset()

    def reset(self) -> None:
        self._total = {k: 0.0 for k in self.keys}
        self._counts = {k: 0 for k in self.keys}

    def update(self, key, value, n=1) -> None:
        if isinstance(value, tuple) and len(value) == 2:
            value, n = value
        if self.writer is not None:
            self.writer.add_scalar(key, value)
        self._total[key] += value * n
        self._counts[key] += n

    def avg(self, key) -> float:
        return self._total[key] / self._counts[key]

    def result(self) -> dict:
        return {k: self.avg(k) for k in self.keys if self._counts[k]}

"""Top-1 on a dataset's own copy of some images and on their lossless originals, image by image.

The shared CIFAR-10 is a JPEG (quality 75) copy: models train and test on JPEG pixels, while users
evaluate on the originals (torchvision's CIFAR10, the Hub's ``uoft-cs/cifar10``). A folder of the
originals of some test rows (``shared/data/cifar10-lossless-test-head``) measures what that costs:
both versions of every image go through the model in every forward mode, and since the images are
the same the difference is paired (per image: right on one version only, or on both or neither).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from ..data import LongTailDataset, build_row_subset, create_loader
from .outputs import collect_outputs

__all__ = ["Z_95", "measure_lossless_subset", "paired_accuracy"]

Z_95 = 1.959963984540054
"""The standard normal's 97.5 % quantile: half-width of a 95 % normal interval in standard errors."""


def paired_accuracy(lossless_logits: torch.Tensor, dataset_logits: torch.Tensor,
                    targets: torch.Tensor) -> Dict[str, Any]:
    """Top-1 (%) on both versions of the same ``n`` images, their difference (lossless minus the
    dataset's copy, in points) with a 95 % normal interval over the per-image differences, and how
    many images only one version got right."""
    right_lossless = lossless_logits.argmax(dim=-1) == targets
    right_dataset = dataset_logits.argmax(dim=-1) == targets
    n = int(targets.numel())
    difference = right_lossless.double() - right_dataset.double()
    delta = 100.0 * float(difference.mean())
    half_width = 100.0 * Z_95 * float(difference.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
    return dict(n=n, top1_lossless=100.0 * float(right_lossless.double().mean()),
                top1_dataset=100.0 * float(right_dataset.double().mean()), delta=delta,
                delta_ci95=[delta - half_width, delta + half_width],
                lossless_only=int((right_lossless & ~right_dataset).sum()),
                dataset_only=int((right_dataset & ~right_lossless).sum()))


def measure_lossless_subset(model: nn.Module, dataset: LongTailDataset, lossless_dir: Any, modes: Sequence[str], *,
                            batch_size: int = 256, workers: int = 2, device: torch.device | str = "cpu",
                            amp: bool = False, channels_last: bool = False) -> Dict[str, Any]:
    """Run ``model`` in every mode of ``modes`` on the images of ``lossless_dir`` and on the same rows of
    ``dataset`` (its eval transform set): ``num_samples``, ``row_range`` (first and last row of
    ``dataset`` when the rows are consecutive, else None) and per mode :func:`paired_accuracy` (the
    labels are the same rows' by :func:`~timm_longtail.data.build_row_subset`'s check)."""
    lossless, rows = build_row_subset(lossless_dir, dataset)
    outputs = [collect_outputs(model, create_loader(images, batch_size=batch_size, shuffle=False,
                                                    num_workers=workers), modes, device=device, amp=amp,
                               channels_last=channels_last, num_classes=dataset.num_classes)
               for images in (lossless, Subset(dataset, rows.tolist()))]
    contiguous = np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
    return dict(num_samples=len(rows), row_range=[int(rows[0]), int(rows[-1])] if contiguous else None,
                result={mode: paired_accuracy(outputs[0].logits[mode], outputs[1].logits[mode], outputs[0].targets)
                        for mode in outputs[0].logits})

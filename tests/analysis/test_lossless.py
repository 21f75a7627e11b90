"""The paired top-1 of two versions of the same images (analyze.py lossless-subset's numbers)."""
import math

import pytest
import torch

from timm_longtail.analysis.lossless import Z_95, paired_accuracy


def _logits(predictions, num_classes=3):
    return torch.nn.functional.one_hot(torch.tensor(predictions), num_classes).float()


def test_paired_accuracy_counts_each_image_on_both_versions():
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    lossless = _logits([0, 1, 2, 0, 1, 0, 0, 0])  # right: 0-4, 6 (6 of 8)
    jpeg = _logits([0, 1, 0, 1, 1, 2, 0, 0])  # right: 0, 1, 4, 5, 6 (5 of 8)
    result = paired_accuracy(lossless, jpeg, targets)
    assert result["n"] == 8 and result["top1_lossless"] == 75.0 and result["top1_dataset"] == 62.5
    assert result["lossless_only"] == 2 and result["dataset_only"] == 1  # images 2, 3 and image 5
    assert result["delta"] == pytest.approx(12.5)
    # per-image differences [0, 0, 1, 1, 0, -1, 0, 0]: mean 1/8, sample variance (3 - 8 / 64) / 7
    half = 100 * Z_95 * math.sqrt((3 - 8 / 64) / 7) / math.sqrt(8)
    assert result["delta_ci95"] == pytest.approx([12.5 - half, 12.5 + half])


def test_identical_predictions_differ_by_nothing():
    targets = torch.tensor([0, 1, 2, 2])
    logits = _logits([0, 2, 2, 1])
    result = paired_accuracy(logits, logits.clone(), targets)
    assert result["delta"] == 0 and result["delta_ci95"] == [0, 0]
    assert result["lossless_only"] == result["dataset_only"] == 0 and result["top1_lossless"] == 50.0

"""Long-tail accuracy: top-1/top-5 plus many/medium/few-shot top-1 and per-class accuracy.

An ``evaluate`` module: ``evaluate.load("<path to this folder>")`` works offline. It depends on
nothing but ``evaluate``, ``datasets`` and ``numpy``, so it also runs outside timm_longtail.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{liu2019large,
  title={Large-Scale Long-Tailed Recognition in an Open World},
  author={Liu, Ziwei and Miao, Zhongqi and Zhan, Xiaohang and Wang, Jiayun and Gong, Boqing and Yu, Stella X.},
  booktitle={CVPR}, year={2019}
}
"""

_DESCRIPTION = """\
Accuracy for long-tailed recognition. Classes are sorted into many-shot, medium-shot and
few-shot by their number of TRAINING images, and top-1 accuracy is reported on each group (the
mean of the per-class accuracies of its classes), besides overall top-1/top-5 over samples.
Two rules are in use: "standard" (many: n > 100, few: n < 20; LDAM, RIDE, most papers) and
"ncl" (many: n >= 100, few: n <= 20; NCL/NCL++ code). The rule is returned with the result.
All accuracies are percentages (0-100).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `list` of `int` or `list` of `int`): per sample, class ids ranked by
        score, best first (top-k, k >= 1); a bare int is a top-1 prediction. top5 is reported
        when k >= 5, else it is None.
    references (`list` of `int`): true class ids.
    class_counts (`list` of `int`, optional): training images per class; its length fixes the
        number of classes. Without it the shot groups are None.
    num_classes (`int`, optional): number of classes when class_counts is not given.
    rule (`str`): "standard" (default) or "ncl".
    many_threshold (`int`, optional): overrides the rule's many-shot threshold (100).
    few_threshold (`int`, optional): overrides the rule's few-shot threshold (20).
Returns:
    top1, top5 (or None), top1_many, top1_medium, top1_few (None for an empty group),
    per_class_accuracy (list, None for classes without test samples), per_class_count (test
    samples per class), split_sizes (classes per group), class_splits, shot_split (the rule:
    thresholds, inclusive, description), num_samples.
Examples:
    >>> metric = evaluate.load("timm_longtail/metrics/lt_accuracy")
    >>> metric.compute(predictions=[[0, 1], [1, 0], [1, 2]], references=[0, 1, 2], class_counts=[200, 50, 10])["top1"]
    66.66666666666666
"""

_RULES = {"standard": (100, 20, False), "ncl": (100, 20, True)}


def _split_of(count: int, many: int, few: int, inclusive: bool) -> str:
    if inclusive:
        return "many" if count >= many else ("few" if count <= few else "medium")
    return "many" if count > many else ("few" if count < few else "medium")


def _mean_or_none(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LtAccuracy(evaluate.Metric):
    """Top-1/top-5 and many/medium/few-shot accuracy for long-tailed classification."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                   "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Value("int64"),
                                   "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, class_counts: Optional[Sequence[int]] = None,
                 num_classes: Optional[int] = None, rule: str = "standard",
                 many_threshold: Optional[int] = None, few_threshold: Optional[int] = None) -> Dict[str, object]:
        if rule not in _RULES:
            raise ValueError(f"unknown shot-split rule {rule!r}: use one of {sorted(_RULES)}")
        many, few, inclusive = _RULES[rule]
        many = many if many_threshold is None else int(many_threshold)
        few = few if few_threshold is None else int(few_threshold)
        references = np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("no samples to score")
        ranked = [p if isinstance(p, (list, tuple, np.ndarray)) else [p] for p in predictions]
        k = min(len(p) for p in ranked)
        if k < 1:
            raise ValueError("every prediction needs at least one class id")
        top_k = np.asarray([list(p)[:k] for p in ranked], dtype=np.int64)
        if class_counts is not None:
            num_classes = len(class_counts)
        elif num_classes is None:
            num_classes = int(max(references.max(), top_k.max())) + 1
        if references.min() < 0 or references.max() >= num_classes:
            raise ValueError(f"references must lie in 0..{num_classes - 1}")

        correct1 = top_k[:, 0] == references
        top5 = float(100.0 * (top_k[:, :5] == references[:, None]).any(axis=1).mean()) if k >= 5 else None
        per_class_count = np.bincount(references, minlength=num_classes)
        per_class_correct = np.bincount(references, weights=correct1.astype(np.float64), minlength=num_classes)
        per_class: List[Optional[float]] = [
            float(100.0 * per_class_correct[c] / per_class_count[c]) if per_class_count[c] else None
            for c in range(num_classes)
        ]

        groups: Dict[str, Optional[float]] = {"many": None, "medium": None, "few": None}
        class_splits: Optional[List[str]] = None
        split_sizes: Optional[Dict[str, int]] = None
        if class_counts is not None:
            class_splits = [_split_of(int(n), many, few, inclusive) for n in class_counts]
            split_sizes = {g: class_splits.count(g) for g in groups}
            for group in groups:
                groups[group] = _mean_or_none([per_class[c] for c in range(num_classes)
                                               if class_splits[c] == group and per_class[c] is not None])
        if inclusive:
            description = f"many: n >= {many}, few: n <= {few}, medium otherwise (n = training images of the class)"
        else:
            description = f"many: n > {many}, few: n < {few}, medium otherwise (n = training images of the class)"
        return {
            "top1": float(100.0 * correct1.mean()),
            "top5": top5,
            "top1_many": groups["many"],
            "top1_medium": groups["medium"],
            "top1_few": groups["few"],
            "per_class_accuracy": per_class,
            "per_class_count": per_class_count.tolist(),
            "split_sizes": split_sizes,
            "class_splits": class_splits,
            "shot_split": {"many_threshold": many, "few_threshold": few, "inclusive": inclusive,
                           "description": description},
            "num_samples": int(len(references)),
        }

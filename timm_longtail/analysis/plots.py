"""One PNG per analysis (matplotlib, imported only when a plot is drawn)."""
from __future__ import annotations

import io
from typing import Any, Dict, Mapping, Sequence

__all__ = ["plot_bias_variance", "plot_hardest_negative", "plot_calibration", "plot_expert_usage",
           "plot_disagreement", "plot_lossless_subset", "plot_test_agnostic"]

_SPLITS = ("many", "medium", "few")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    _pyplot().close(figure)
    return buffer.getvalue()


def plot_hardest_negative(by_mode: Mapping[str, Dict[str, Any]], title: str) -> bytes:
    """Per mode, the hardest negative's score histogram of each non-empty split (share of the split)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(by_mode), figsize=(4.2 * len(by_mode), 3.6), dpi=110, squeeze=False)
    for axis, (mode, result) in zip(axes[0], by_mode.items()):
        edges = result["bin_edges"]
        centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        for split in _SPLITS:
            row = result["splits"][split]
            if row["n"]:
                axis.plot(centres, [c / row["n"] for c in row["histogram"]], "o-", markersize=3,
                          label=f"{split} (mean {row['mean']:.2f})")
        axis.set_title(mode, fontsize=9)
        axis.set_xlabel("softmax score of the hardest negative class")
        axis.set_xlim(0, 1)
        axis.legend(fontsize=8, frameon=False)
    axes[0][0].set_ylabel("share of the split's images")
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def plot_calibration(by_mode: Mapping[str, Dict[str, Any]], title: str) -> bytes:
    """Reliability diagram per mode: accuracy against confidence per bin, the diagonal for reference."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(by_mode), figsize=(3.8 * len(by_mode), 3.8), dpi=110, squeeze=False)
    for axis, (mode, result) in zip(axes[0], by_mode.items()):
        overall = result["splits"]["all"]
        bins = [b for b in overall["bins"] if b["count"]]
        width = 1.0 / result["num_bins"]
        axis.bar([b["lower"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
                 edgecolor="0.3", color="tab:blue", alpha=0.7, label="accuracy")
        axis.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1)
        for split in _SPLITS:
            row = result["splits"].get(split)
            if row:
                points = [(b["confidence"], b["accuracy"]) for b in row["bins"] if b["count"]]
                axis.plot(*zip(*points), ".", markersize=5, label=f"{split} (ECE {100 * row['ece']:.1f})")
        axis.set_title(f"{mode}: ECE {100 * overall['ece']:.1f}, NLL {overall['nll']:.2f}", fontsize=9)
        axis.set_xlabel("confidence")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.legend(fontsize=7, frameon=False, loc="upper left")
    axes[0][0].set_ylabel("accuracy")
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def plot_expert_usage(result: Mapping[str, Any], title: str) -> bytes:
    """Stacked share of images using 1..E experts, per split (RIDE's Fig. 6)."""
    plt = _pyplot()
    splits = [s for s in ("all",) + _SPLITS if result["splits"][s]["n"]]
    figure, axis = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    bottom = [0.0] * len(splits)
    for k in range(result["num_experts"]):
        shares = [result["splits"][s]["share"][k] or 0.0 for s in splits]
        axis.bar(splits, shares, bottom=bottom, label=f"{k + 1} expert{'s' if k else ''}")
        bottom = [b + v for b, v in zip(bottom, shares)]
    for i, split in enumerate(splits):
        axis.text(i, 1.02, f"mean {result['splits'][split]['mean_experts']:.2f}", ha="center", fontsize=8)
    axis.set_ylim(0, 1.12)
    axis.set_ylabel("share of the split's images")
    axis.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    axis.set_title(title, fontsize=10)
    return _png(figure)


def plot_disagreement(result: Mapping[str, Any], title: str) -> bytes:
    """Mean pairwise KL and top-1 disagreement between experts, per split."""
    plt = _pyplot()
    splits = [s for s in ("all",) + _SPLITS if result["splits"][s]["n"]]
    figure, (kl_axis, top1_axis) = plt.subplots(1, 2, figsize=(8, 3.5), dpi=110)
    kl_axis.bar(splits, [result["splits"][s]["mean_pairwise_kl"] for s in splits], color="tab:purple")
    kl_axis.set_ylabel("mean pairwise KL between experts")
    top1_axis.bar(splits, [100 * result["splits"][s]["top1_disagreement"] for s in splits], color="tab:orange")
    top1_axis.set_ylabel("images whose experts' top-1 differ (%)")
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def plot_test_agnostic(by_mode: Mapping[str, Dict[str, Any]], title: str) -> bytes:
    """Top-1 against the test distribution, head-heavy (forward 50) to tail-heavy (backward 50)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4), dpi=110)
    names: Sequence[str] = []
    for mode, result in by_mode.items():
        names = [row["name"] for row in result["rows"]]
        positions = range(len(names))
        line = axis.plot(positions, [row["top1"] for row in result["rows"]], "o-", markersize=4, label=f"{mode}")[0]
        axis.plot(positions, [row["expected_top1"] for row in result["rows"]], ":", color=line.get_color(),
                  label=f"{mode}, expected from per-class accuracy")
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("top-1 accuracy (%)")
    axis.set_xlabel("test distribution (SADE's protocol)")
    axis.legend(fontsize=7, frameon=False)
    axis.set_title(title, fontsize=10)
    return _png(figure)


def plot_bias_variance(result: Mapping[str, Any], title: str) -> bytes:
    """Bias and variance per split (bars) and per class against the training-count order (lines)."""
    plt = _pyplot()
    figure, (split_axis, class_axis) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    splits = [s for s in ("all",) + _SPLITS if result["splits"][s]["n"]]
    positions = range(len(splits))
    for offset, key in ((-0.2, "bias"), (0.2, "variance")):
        split_axis.bar([p + offset for p in positions], [result["splits"][s][key] for s in splits], width=0.4,
                       label=key)
    split_axis.set_xticks(list(positions))
    split_axis.set_xticklabels(splits)
    split_axis.set_ylabel("0-1 loss decomposition")
    split_axis.legend(fontsize=8, frameon=False)
    order = result.get("class_order") or list(range(len(result["per_class"])))
    for key in ("bias", "variance"):
        class_axis.plot(range(len(order)), [result["per_class"][c][key] for c in order], ".-", label=key)
    class_axis.set_xlabel("classes sorted by training images (head left)")
    class_axis.legend(fontsize=8, frameon=False)
    figure.suptitle(f"{title} ({result['num_models']} models)", fontsize=10)
    return _png(figure)


def plot_lossless_subset(by_mode: Mapping[str, Dict[str, Any]], title: str) -> bytes:
    """Per mode, top-1 on the lossless originals beside top-1 on the dataset's copy of the same images,
    with the paired difference and its 95 % interval."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(by_mode) + 2), 3.8), dpi=110)
    positions = range(len(by_mode))
    for offset, key, label in ((-0.2, "top1_lossless", "original (lossless) pixels"),
                               (0.2, "top1_dataset", "the dataset's copy")):
        axis.bar([p + offset for p in positions], [r[key] for r in by_mode.values()], width=0.4, label=label)
    for position, result in zip(positions, by_mode.values()):
        low, high = result["delta_ci95"]
        axis.text(position, max(result["top1_lossless"], result["top1_dataset"]) + 1,
                  f"{result['delta']:+.2f}\n[{low:+.2f}, {high:+.2f}]", ha="center", fontsize=7)
    axis.set_xticks(list(positions))
    axis.set_xticklabels(list(by_mode), fontsize=8)
    axis.set_ylim(0, 112)
    axis.set_ylabel(f"top-1 accuracy (%), n = {next(iter(by_mode.values()))['n']:,}")
    axis.legend(fontsize=8, frameon=False, loc="lower right")
    axis.set_title(title, fontsize=10)
    return _png(figure)

"""Reporting an evaluation: the console table, the JSON/CSV results and the per-class plot.

Every file is rendered in memory and lands by an atomic rename (no partial file, previous one kept
on failure); matplotlib is imported only when a plot is drawn.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from ..files import atomic_write_bytes  # re-exported: evaluation's writers are the package's
from ..data.longtail import ShotSplit, classes_by_count

__all__ = ["CSV_COLUMNS", "atomic_write_bytes", "format_table", "plot_per_class_accuracy", "write_results"]

PathLike = Union[str, os.PathLike]

CSV_COLUMNS = (
    "model", "checkpoint", "dataset", "split", "forward_mode", "top1", "top5", "top1_many", "top1_medium",
    "top1_few", "macs_per_image", "flops_per_image", "images_per_sec", "experts_used_hist", "experts_used_mean",
    "num_samples", "num_classes", "class_counts_source", "shot_split", "input_size", "device", "amp",
    "eval_seconds",
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of the headline figures, one line per forward mode."""
    header = ("forward_mode", "top1", "top5", "many", "medium", "few", "GMACs/img", "img/s", "experts used")
    lines = [header]
    for row in rows:
        hist = row.get("experts_used_hist")
        lines.append((
            str(row["forward_mode"]), _fmt(row["top1"]), _fmt(row["top5"]), _fmt(row["top1_many"]),
            _fmt(row["top1_medium"]), _fmt(row["top1_few"]), _fmt(row["macs_per_image"] / 1e9, 4),
            _fmt(row["images_per_sec"], 1), "/".join(map(str, hist)) if hist else "-",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
            for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def _csv_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("description", json.dumps(value))
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return "" if value is None else value


def plot_per_class_accuracy(rows: Sequence[Mapping[str, Any]], class_counts: Sequence[int],
                            shot_split: Optional[ShotSplit] = None, title: str = "",
                            class_names: Optional[Sequence[str]] = None) -> bytes:
    """PNG bytes: per-class top-1 against classes sorted by training count (head left, tail right).

    One line per row (forward mode); grey steps show the training counts (log scale, right axis);
    dashed lines separate the many/medium/few groups.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    order = classes_by_count(class_counts)
    positions = list(range(len(order)))
    figure, accuracy_axis = plt.subplots(figsize=(10, 5), dpi=110)
    count_axis = accuracy_axis.twinx()
    count_axis.fill_between(positions, [max(int(class_counts[c]), 1) for c in order], step="mid", color="0.88",
                            zorder=0)
    count_axis.set_yscale("log")
    count_axis.set_ylim(bottom=max(min(int(c) for c in class_counts), 1) / 2)  # keep the tail's bar visible
    count_axis.set_ylabel("training images per class (log)")
    accuracy_axis.set_zorder(count_axis.get_zorder() + 1)
    accuracy_axis.patch.set_visible(False)
    style = "o-" if len(order) <= 100 else "-"
    for row in rows:
        accuracy = row["per_class_accuracy"]
        values = [accuracy[c] if accuracy[c] is not None else float("nan") for c in order]
        accuracy_axis.plot(positions, values, style, markersize=3, linewidth=1.2,
                           label=f"{row['forward_mode']} (top-1 {row['top1']:.1f})")
    xlabel = "classes sorted by training images (many-shot left, few-shot right)"
    if shot_split is not None:
        splits = shot_split.class_splits([class_counts[c] for c in order])
        starts = [0] + [i for i in range(1, len(splits)) if splits[i] != splits[i - 1]]
        label_transform = blended_transform_factory(accuracy_axis.transData, accuracy_axis.transAxes)
        for start, end in zip(starts, starts[1:] + [len(splits)]):
            if start:
                accuracy_axis.axvline(start - 0.5, color="0.4", linestyle="--", linewidth=0.8)
            accuracy_axis.text((start + end - 1) / 2, 0.97, splits[start], transform=label_transform,
                               ha="center", va="top", fontsize=9, color="0.25")
        xlabel += f"\nshot groups: {shot_split.describe()}"
    if class_names is not None and len(order) <= 30:
        accuracy_axis.set_xticks(positions)
        accuracy_axis.set_xticklabels([class_names[c] for c in order], rotation=30, ha="right", fontsize=8)
    accuracy_axis.set_xlabel(xlabel, fontsize=9)
    accuracy_axis.set_ylabel("top-1 accuracy (%)")
    accuracy_axis.set_ylim(-2, 110)
    accuracy_axis.set_xlim(-0.5, len(order) - 0.5)
    accuracy_axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3 if class_names is not None and len(order) <= 30
                                                              else -0.18),
                         ncol=min(len(rows), 4), fontsize=8, frameon=False)
    if title:
        accuracy_axis.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_results(rows: Sequence[Mapping[str, Any]], results_file: Optional[PathLike] = None,
                  plot_file: Optional[PathLike] = None, shot_split: Optional[ShotSplit] = None,
                  title: str = "", class_names: Optional[Sequence[str]] = None) -> List[Path]:
    """Write JSON (a dict for one row, a list for several), a CSV beside it for several rows, and the plot.

    Everything is rendered in memory first and each file lands by an atomic rename, so a failure
    leaves no partial file. Returns the paths written.
    """
    outputs: List[Tuple[Path, bytes]] = []
    if results_file is not None:
        results_path = Path(results_file)
        payload = rows[0] if len(rows) == 1 else list(rows)
        outputs.append((results_path, (json.dumps(payload, indent=2) + "\n").encode("utf-8")))
        if len(rows) > 1:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: _csv_value(row.get(key)) for key in CSV_COLUMNS})
            outputs.append((results_path.with_suffix(".csv"), text.getvalue().encode("utf-8")))
    if plot_file is not None and rows:
        outputs.append((Path(plot_file), plot_per_class_accuracy(rows, rows[0]["class_counts"], shot_split, title,
                                                                 class_names)))
    for path, data in outputs:
        atomic_write_bytes(path, data)
    return [path for path, _ in outputs]

#!/usr/bin/env python3
"""Build the demo set shipped in ``timm_longtail/data/demo/`` from a local CIFAR-10 parquet copy.

train: CIFAR-10-LT at imbalance factor 100 scaled to n_max = 500 (500, 299, 179, 107, 64, 38,
23, 13, 8, 5 images; 1,236 in all), picked with the standard seeded construction
(:func:`timm_longtail.data.make_longtail_indices`, seed 0) from the CIFAR-10 training split.
test: the first 100 images of each class of the CIFAR-10 test split, in their original order.

The JPEG bytes are copied as they are (no re-encoding); ``source_index`` is the row in the
source split. The output is deterministic for a given input, so re-running reproduces it.

    python scripts/make_demo.py --cifar10 ../shared/data/cifar10
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import timm_longtail  # noqa: E402,F401  (torchvision shim before datasets/timm)
from timm_longtail.data import make_longtail_indices  # noqa: E402
from timm_longtail.data.sources import DEMO_DIR  # noqa: E402

NUM_PER_CLASS_MAX = 500
IMBALANCE_FACTOR = 100
TEST_PER_CLASS = 100

README = f"""# Demo set (CIFAR-10-LT subset)

Made by `scripts/make_demo.py` from CIFAR-10 (JPEG quality-75 copy, original row order; see
`shared/data/README.md` of the project for provenance). Image bytes are unchanged.

- `train-00000-of-00001.parquet`: CIFAR-10-LT, imbalance factor {IMBALANCE_FACTOR}, n_max = {NUM_PER_CLASS_MAX}
  (standard seeded per-class selection, seed 0): {{train_counts}} images per class, {{train_total}} in all.
- `test-00000-of-00001.parquet`: the first {TEST_PER_CLASS} test images of each class ({{test_total}} in all).

Columns: `img` (Image: bytes, path), `label` (ClassLabel, CIFAR-10 names), `source_index` (row in the
source split). Load with `timm_longtail.data.build_dataset("demo", split="train" | "test")`.
For smoke tests and examples only: accuracy on it says little about a model.
Cite: Alex Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar10", default=str(REPO.parent / "shared" / "data" / "cifar10"),
                        help="folder with plain_text/{train,test}-*.parquet (uoft-cs/cifar10 layout)")
    parser.add_argument("--out", default=str(DEMO_DIR), help="output folder (default: the package's demo/)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    from datasets import load_dataset

    datasets.disable_progress_bars()

    source = Path(args.cifar10)
    files = {split: sorted(str(p) for p in source.rglob(f"{split}-*.parquet")) for split in ("train", "test")}
    if not all(files.values()):
        print(f"error: no CIFAR-10 parquet files under {source}", file=sys.stderr)
        return 2
    cifar = load_dataset("parquet", data_files=files)
    train_labels = np.asarray(cifar["train"].with_format("numpy")["label"], dtype=np.int64)
    test_labels = np.asarray(cifar["test"].with_format("numpy")["label"], dtype=np.int64)

    train_rows = make_longtail_indices(train_labels, IMBALANCE_FACTOR, seed=0, num_per_class_max=NUM_PER_CLASS_MAX)
    test_rows = np.sort(np.concatenate([np.where(test_labels == c)[0][:TEST_PER_CLASS]
                                        for c in range(int(test_labels.max()) + 1)]))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train_rows), ("test", test_rows)):
        subset = cifar[split].select(rows.tolist()).add_column("source_index", rows.tolist()).flatten_indices()
        target = out / f"{split}-00000-of-00001.parquet"
        temporary = out / f".{split}.parquet.tmp"
        # zstd shares the JPEG headers across rows (3x smaller); the schema keeps the features metadata
        pq.write_table(subset.data.table, str(temporary), compression="zstd", compression_level=9)
        os.replace(temporary, target)
        print(f"{target}: {len(subset)} rows, {target.stat().st_size:,} bytes")

    counts = np.bincount(train_labels[train_rows]).tolist()
    readme = README.format(train_counts=", ".join(map(str, counts)), train_total=len(train_rows),
                           test_total=len(test_rows))
    (out / "README.md").write_text(readme, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Long-tailed datasets, shot splits, augmentation recipes and loaders.

Path of an image: :func:`build_dataset` (source, long-tail construction, class counts) ->
a transform from :mod:`.transforms` -> :func:`create_loader`.
"""
from .loader import ClassBalancedSampler, create_loader
from .longtail import (
    SHOT_RULES, ShotSplit, classes_by_count, longtail_class_counts, make_longtail_indices, subsample_per_class,
)
from .sources import (
    DATASET_NAMES,
    DEMO_DIR,
    FileListDataset,
    InMemoryImageDataset,
    LongTailDataset,
    build_dataset,
    build_row_subset,
    canonical_dataset_name,
    read_split_list,
)
from .transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    TRAIN_RECIPES,
    Cutout,
    MultiViewTransform,
    create_eval_transform,
    create_train_transform,
    eval_input_size,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "ClassBalancedSampler",
    "classes_by_count",
    "Cutout",
    "DATASET_NAMES",
    "DEMO_DIR",
    "FileListDataset",
    "InMemoryImageDataset",
    "LongTailDataset",
    "MultiViewTransform",
    "SHOT_RULES",
    "ShotSplit",
    "TRAIN_RECIPES",
    "build_dataset",
    "build_row_subset",
    "canonical_dataset_name",
    "create_eval_transform",
    "create_loader",
    "create_train_transform",
    "eval_input_size",
    "longtail_class_counts",
    "make_longtail_indices",
    "read_split_list",
    "subsample_per_class",
]

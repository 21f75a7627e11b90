"""Long-tailed benchmark datasets as torch Datasets, loaded with the ``datasets`` library.

Every dataset object returns ``(image_tensor, label)`` and carries

``class_counts``
    training images per class (always the TRAINING split's counts, also on a test-split object,
    because many/medium/few splits are defined by training frequency);
``class_names``, ``num_classes``, ``targets`` (int64 labels of this split) and ``info`` (a dict
    naming the source, split and imbalance factor, for checkpoints and results files).

Small-image sets (CIFAR, Tiny-ImageNet, the demo set) are decoded once into one uint8 array in
memory: decoding 32x32 JPEGs every epoch would cost more than the ResNet-32 forward pass. The big
benchmarks (ImageNet-LT, Places-LT, iNaturalist 2018) read the public split lists
(``relative/path label`` per line) and open images lazily from the user's image root.

:func:`build_dataset` is the one entry point; every bad input raises
:class:`~timm_longtail.errors.UserInputError` with a message naming what to fix.
"""
from __future__ import annotations

import abc
import io
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import UserInputError
from .benchmarks import BENCHMARKS
from .longtail import longtail_class_counts, make_longtail_indices

__all__ = [
    "DATASET_NAMES",
    "DEMO_DIR",
    "FileListDataset",
    "InMemoryImageDataset",
    "LongTailDataset",
    "build_dataset",
    "build_row_subset",
    "canonical_dataset_name",
    "read_split_list",
]

PathLike = Union[str, os.PathLike]
Transform = Optional[Callable]
DEMO_DIR = Path(__file__).resolve().parent / "demo"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_IMAGE_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """Fallback transform when none is given: float CHW tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _open_rgb(data: Optional[bytes], path: Optional[str], where: str) -> Image.Image:
    """Open and fully decode one image as RGB; a bad file becomes a UserInputError naming it."""
    try:
        source = io.BytesIO(data) if data is not None else path
        if source is None:
            raise ValueError("the row holds neither image bytes nor a path")
        with Image.open(source) as image:
            return image.convert("RGB")  # convert() decodes everything: truncation shows up here
    except _IMAGE_READ_ERRORS as exc:
        raise UserInputError(f"unreadable or truncated image {where}: {exc}; replace or remove that file") from None


def _decode_rgb(data: Optional[bytes], path: Optional[str], where: str) -> np.ndarray:
    """One stored image as an RGB uint8 array."""
    return np.asarray(_open_rgb(data, path, where), dtype=np.uint8)


class LongTailDataset(Dataset, abc.ABC):
    """Common attributes and ``__getitem__`` of every dataset here; subclasses provide images."""

    def __init__(self, targets: Sequence[int], class_names: Sequence[str], class_counts: Optional[Sequence[int]],
                 transform: Transform = None, info: Optional[Dict[str, object]] = None,
                 missing_counts_hint: str = "training class counts are unknown for this dataset"):
        self.targets = np.asarray(targets, dtype=np.int64)
        self.class_names = [str(name) for name in class_names]
        self.num_classes = len(self.class_names)
        self._class_counts = None if class_counts is None else [int(c) for c in class_counts]
        self.transform = transform
        self.info: Dict[str, object] = dict(info or {})
        self._missing_counts_hint = missing_counts_hint
        if self.targets.size and (self.targets.min() < 0 or self.targets.max() >= self.num_classes):
            raise UserInputError(
                f"labels must lie in 0..{self.num_classes - 1} for {self.num_classes} classes, found "
                f"{int(self.targets.min())}..{int(self.targets.max())}")

    @property
    def class_counts(self) -> List[int]:
        """Training images per class (of the training split, whichever split this object is)."""
        if self._class_counts is None:
            raise UserInputError(self._missing_counts_hint)
        return list(self._class_counts)

    @property
    def has_class_counts(self) -> bool:
        return self._class_counts is not None

    def __len__(self) -> int:
        return int(self.targets.size)

    @abc.abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """The untransformed RGB image of row ``index``."""

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        image = self.load_image(index)
        image = self.transform(image) if self.transform is not None else _to_tensor(image)
        return image, int(self.targets[index])


class InMemoryImageDataset(LongTailDataset):
    """Images held as one ``(N, H, W, 3)`` uint8 array, decoded once when the dataset is built."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], class_names: Sequence[str],
                 class_counts: Optional[Sequence[int]], transform: Transform = None,
                 info: Optional[Dict[str, object]] = None):
        super().__init__(targets, class_names, class_counts, transform, info)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) != len(self.targets):
            raise UserInputError(f"expected {len(self.targets)} RGB uint8 images, got array {images.shape} {images.dtype}")
        self.images = images

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


class FileListDataset(LongTailDataset):
    """Images read lazily from ``root / relative_path`` (big benchmarks, user folders)."""

    def __init__(self, root: PathLike, paths: Sequence[str], targets: Sequence[int], class_names: Sequence[str],
                 class_counts: Optional[Sequence[int]], transform: Transform = None,
                 info: Optional[Dict[str, object]] = None, missing_counts_hint: str = ""):
        super().__init__(targets, class_names, class_counts, transform, info,
                         missing_counts_hint or "training class counts are unknown for this dataset")
        self.root = Path(root)
        self.paths = list(paths)

    def load_image(self, index: int) -> Image.Image:
        path = self.root / self.paths[index]
        if not path.is_file():
            raise UserInputError(f"image file not found: {path}; check the image root (--data-dir)")
        return _open_rgb(None, str(path), str(path))


# --------------------------------------------------------------------------------------------
# Parquet sources (CIFAR, Tiny-ImageNet, demo)
# --------------------------------------------------------------------------------------------

def _quiet_load_dataset(*args, **kwargs):
    """``datasets.load_dataset`` without its progress bars (they drown a validation log)."""
    import datasets

    were_enabled = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(*args, **kwargs)
    finally:
        if were_enabled:
            datasets.enable_progress_bars()


def _require_folder(root: Optional[PathLike], what: str) -> Path:
    if root is None:
        raise UserInputError(f"{what} needs a data folder: pass --data-dir / root=<folder>")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserInputError(f"data folder not found: {folder} (needed for {what}); check --data-dir")
    return folder


def _load_parquet_split(root: Optional[PathLike], file_prefixes: Sequence[str], hub_id: Optional[str],
                        hub_split: str, what: str):
    """A ``datasets.Dataset`` from ``<root>/**/<prefix>-*.parquet``, or from the Hub when root is None."""
    if root is None and hub_id is not None:
        try:
            return _quiet_load_dataset(hub_id, split=hub_split)
        except Exception as exc:  # network, cache miss, auth: all mean "give me a local copy"
            raise UserInputError(
                f"could not load {hub_id!r} ({hub_split}) from the Hugging Face Hub ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); pass --data-dir with a local copy") from None
    folder = _require_folder(root, what)
    files: List[Path] = []
    for prefix in file_prefixes:
        files = sorted(folder.rglob(f"{prefix}-*.parquet"))
        if files:
            break
    if not files:
        raise UserInputError(
            f"no parquet file for split {hub_split!r} of {what} under {folder} "
            f"(looked for {' or '.join(p + '-*.parquet' for p in file_prefixes)})")
    try:
        return _quiet_load_dataset("parquet", data_files={hub_split: [str(f) for f in files]}, split=hub_split)
    except Exception as exc:
        raise UserInputError(f"cannot read {', '.join(map(str, files))}: {exc}") from None


def _find_columns(hf_dataset, label_column: Optional[str]) -> Tuple[str, str]:
    """Name of the image column and of the label column of a parquet image dataset."""
    from datasets import Image as ImageFeature

    features = hf_dataset.features
    image_columns = [name for name, feature in features.items() if isinstance(feature, ImageFeature)]
    if not image_columns:
        image_columns = [name for name in ("img", "image") if name in features]
    if not image_columns:
        raise UserInputError(f"no image column in the dataset (columns: {list(features)})")
    candidates = [label_column] if label_column else ["label", "fine_label", "labels"]
    labels = [name for name in candidates if name in features]
    if not labels:
        raise UserInputError(f"no label column {candidates} in the dataset (columns: {list(features)})")
    return image_columns[0], labels[0]


def _class_names(hf_dataset, label_column: str, num_classes: int) -> List[str]:
    feature = hf_dataset.features[label_column]
    names = getattr(feature, "names", None)
    return list(names) if names else [str(i) for i in range(num_classes)]


def _labels(hf_dataset, label_column: str) -> np.ndarray:
    """A label column as int64 numpy, read through Arrow (row iteration is 100x slower)."""
    column = hf_dataset.with_format("arrow")[label_column]
    return np.asarray(column.to_numpy(zero_copy_only=False) if hasattr(column, "to_numpy") else column,
                      dtype=np.int64)


def _decode_rows(hf_dataset, image_column: str, indices: Sequence[int], what: str) -> np.ndarray:
    """Decode the chosen rows once into an ``(N, H, W, 3)`` uint8 array."""
    indices = np.asarray(indices, dtype=np.int64)
    table_column = hf_dataset.with_format("arrow")[image_column]
    cells = table_column.take(indices).to_pylist()
    arrays = []
    for position, cell in enumerate(cells):
        if isinstance(cell, (bytes, str)):  # a bare binary or path column
            cell = {"bytes": cell} if isinstance(cell, bytes) else {"path": cell}
        cell = cell or {}
        where = f"row {int(indices[position])} ({cell.get('path') or 'no path'}) of {what}"
        arrays.append(_decode_rgb(cell.get("bytes"), cell.get("path"), where))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise UserInputError(f"{what}: images of different sizes {sorted(shapes)[:3]}; expected one size")
    if not arrays:
        raise UserInputError(f"{what}: no images selected")
    return np.stack(arrays)


_SPLIT_FILE_PREFIXES = {"validation": ["valid", "validation", "val"]}  # parquet file names of a split


def _split_name(split: str, allowed: Dict[str, str], what: str) -> str:
    key = split.strip().lower()
    if key not in allowed:
        raise UserInputError(f"unknown split {split!r} for {what}: use one of {sorted(set(allowed))}")
    return allowed[key]


def _build_cifar_lt(name: str, root: Optional[PathLike], split: str, imbalance_factor: float,
                    transform: Transform, seed: int) -> InMemoryImageDataset:
    row = BENCHMARKS[name]
    spec, what, num_classes = row.source, row.title, row.num_classes
    split = _split_name(split, {"train": "train", "test": "test", "val": "test", "validation": "test"}, what)
    train = _load_parquet_split(root, ["train"], spec["hub_id"], "train", what)
    image_column, label_column = _find_columns(train, spec["label_column"])
    train_labels = _labels(train, label_column)
    if train_labels.size == 0 or train_labels.max() + 1 != num_classes:
        raise UserInputError(f"{what}: the training labels do not span {num_classes} classes; is this the right folder?")
    selected = make_longtail_indices(train_labels, imbalance_factor, seed=seed, num_classes=num_classes)
    class_counts = np.bincount(train_labels[selected], minlength=num_classes).tolist()
    class_names = _class_names(train, label_column, num_classes)
    if split == "train":
        source, indices = train, selected
    else:
        source = _load_parquet_split(root, ["test"], spec["hub_id"], "test", what)
        image_column, label_column = _find_columns(source, spec["label_column"])
        indices = np.arange(len(source))
    labels = _labels(source, label_column)[indices]
    images = _decode_rows(source, image_column, indices, f"{what} {split}")
    info = dict(name=name, split=split, imbalance_factor=float(imbalance_factor), seed=seed,
                root=None if root is None else str(root), source=spec["hub_id"] if root is None else str(root))
    return InMemoryImageDataset(images, labels, class_names, class_counts, transform, info)


def _build_tiny_imagenet_lt(root: Optional[PathLike], split: str, imbalance_factor: float,
                            transform: Transform) -> InMemoryImageDataset:
    row = BENCHMARKS["tiny_imagenet_lt"]
    what, num_classes = row.title, row.num_classes
    split = _split_name(split, {"train": "train", "val": "validation", "validation": "validation",
                                "valid": "validation", "test": row.test_split}, what)
    train = _load_parquet_split(root, ["train"], None, "train", what)
    image_column, label_column = _find_columns(train, None)
    train_labels = _labels(train, label_column)
    wanted = longtail_class_counts(500, num_classes, imbalance_factor)
    available = np.bincount(train_labels, minlength=num_classes)
    short = [i for i in range(num_classes) if available[i] < wanted[i]]
    if short:
        i = short[0]
        raise UserInputError(
            f"{what} at imbalance factor {imbalance_factor:g} needs {wanted[i]} training images of class {i} "
            f"but {root} has {int(available[i])}; this folder supports only larger imbalance factors "
            f"(the shared tiny-imagenet-lt10 folder: IF >= 10)")
    # the first n_i rows of each class, in the folder's row order (deterministic, no RNG)
    first_rows = [np.where(train_labels == i)[0][:wanted[i]] for i in range(num_classes)]
    class_names = _class_names(train, label_column, num_classes)
    if split == "train":
        source, indices = train, np.concatenate(first_rows)
    else:
        source = _load_parquet_split(root, _SPLIT_FILE_PREFIXES["validation"], None, "validation", what)
        image_column, label_column = _find_columns(source, None)
        indices = np.arange(len(source))
    labels = _labels(source, label_column)[indices]
    images = _decode_rows(source, image_column, indices, f"{what} {split}")
    info = dict(name="tiny_imagenet_lt", split=split, imbalance_factor=float(imbalance_factor), root=str(root))
    return InMemoryImageDataset(images, labels, class_names, list(wanted), transform, info)


def _build_demo(split: str, transform: Transform) -> InMemoryImageDataset:
    what = BENCHMARKS["demo"].title
    split = _split_name(split, {"train": "train", "test": "test", "val": "test", "validation": "test"}, what)
    train = _load_parquet_split(DEMO_DIR, ["train"], None, "train", what)
    _, label_column = _find_columns(train, None)
    train_labels = _labels(train, label_column)
    class_names = _class_names(train, label_column, int(train_labels.max()) + 1)
    class_counts = np.bincount(train_labels, minlength=len(class_names)).tolist()
    source = train if split == "train" else _load_parquet_split(DEMO_DIR, ["test"], None, "test", what)
    image_column, label_column = _find_columns(source, None)
    labels = _labels(source, label_column)
    images = _decode_rows(source, image_column, np.arange(len(source)), f"{what} ({split})")
    info = dict(name="demo", split=split, imbalance_factor=float(max(class_counts) / min(class_counts)),
                root=str(DEMO_DIR), source="CIFAR-10-LT subset shipped with timm_longtail")
    return InMemoryImageDataset(images, labels, class_names, class_counts, transform, info)


def build_row_subset(root: PathLike, of: LongTailDataset) -> Tuple[InMemoryImageDataset, np.ndarray]:
    """Some rows of ``of``'s split stored another way, e.g. the lossless originals of the first 1,017
    images of the JPEG CIFAR-10 test split (``shared/data/cifar10-lossless-test-head``): the folder's
    images as a dataset with ``of``'s classes, training counts and transform, and the rows of ``of``
    they are, so that both can be scored image by image.

    The folder holds ``**/<split>-*.parquet`` in the Hub layout (an image and a label column). Its
    row i is ``of``'s row ``<split>_index[i]`` when it has that column (``test_index``), else row i.
    Class names (when stored) and every label must equal ``of``'s, or the folder holds other images.
    """
    split = str(of.info.get("split") or "test")
    what = f"the row subset in {root}"
    table = _load_parquet_split(root, _SPLIT_FILE_PREFIXES.get(split, [split]), None, split, what)
    image_column, label_column = _find_columns(table, None)
    labels = _labels(table, label_column)
    index_column = f"{split}_index"
    rows = _labels(table, index_column) if index_column in table.features else np.arange(len(labels))
    name = f"{of.info.get('name', 'the dataset')} {split}"
    if rows.size == 0:
        raise UserInputError(f"{what}: no rows")
    if rows.min() < 0 or rows.max() >= len(of) or np.unique(rows).size != rows.size:
        raise UserInputError(f"{what}: its rows must be distinct rows of {name} (0..{len(of) - 1}), "
                             f"got {int(rows.min())}..{int(rows.max())}")
    names = getattr(table.features[label_column], "names", None)
    if names and list(names) != of.class_names:
        raise UserInputError(f"{what}: its classes {list(names)[:3]}... are not those of {name} "
                             f"{of.class_names[:3]}...")
    wrong = np.flatnonzero(labels != of.targets[rows])
    if wrong.size:
        i = int(wrong[0])
        raise UserInputError(f"{what}: row {i} has label {int(labels[i])} but row {int(rows[i])} of {name} has "
                             f"{int(of.targets[rows[i]])} ({wrong.size} rows differ): not the same images")
    images = _decode_rows(table, image_column, np.arange(len(labels)), what)
    stored = getattr(of, "images", None)
    if stored is not None and images.shape[1:] != stored.shape[1:]:
        raise UserInputError(f"{what}: images of {images.shape[1]}x{images.shape[2]} pixels, {name} has "
                             f"{stored.shape[1]}x{stored.shape[2]}: not the same images")
    info = dict(of.info, split=split, root=str(root), source=str(root), rows_of=name)
    counts = of.class_counts if of.has_class_counts else None
    return InMemoryImageDataset(images, labels, of.class_names, counts, of.transform, info), rows


# --------------------------------------------------------------------------------------------
# Split-list benchmarks (ImageNet-LT, Places-LT, iNaturalist 2018)
# --------------------------------------------------------------------------------------------

_SPLIT_LISTS = tuple(name for name, row in BENCHMARKS.items() if "list_prefix" in row.source)


def read_split_list(path: PathLike, num_classes: Optional[int] = None) -> Tuple[List[str], np.ndarray]:
    """Parse a ``relative/path label`` list; returns the paths and int64 labels in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"split list not found: {path}")
    paths: List[str] = []
    labels: List[int] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise UserInputError(f"{path}, line {line_number}: expected 'relative/path label', got {line!r}")
            label = int(parts[1])
            if label < 0 or (num_classes is not None and label >= num_classes):
                raise UserInputError(
                    f"{path}, line {line_number}: label {label} outside 0..{(num_classes or 1) - 1}")
            paths.append(parts[0])
            labels.append(label)
    if not paths:
        raise UserInputError(f"split list is empty: {path}")
    return paths, np.asarray(labels, dtype=np.int64)


def _class_name_from_path(relative_path: str) -> str:
    """``train/n01440764/x.JPEG`` -> ``n01440764``; ``train_val2018/Plantae/7291/x.jpg`` -> ``Plantae/7291``."""
    parents = Path(relative_path).parent.parts
    return "/".join(parents[1:]) if len(parents) > 1 else "/".join(parents)


def _build_split_list(name: str, root: Optional[PathLike], split: str, transform: Transform,
                      split_dir: Optional[PathLike], split_file: Optional[PathLike]) -> FileListDataset:
    row = BENCHMARKS[name]
    what, prefix, num_classes = row.title, row.source["list_prefix"], row.num_classes
    image_root = _require_folder(root, f"{what} (the folder holding the images)")
    list_dir = Path(split_dir).expanduser() if split_dir is not None else image_root
    split = _split_name(split, {"train": "train", "val": "val", "validation": "val", "test": row.test_split}, what)
    list_file = Path(split_file) if split_file is not None else list_dir / f"{prefix}_{split}.txt"
    if not list_file.is_file():
        raise UserInputError(
            f"split list not found: {list_file}; download the {what} split lists (e.g. from "
            f"facebookresearch/classifier-balancing) and pass their folder with --split-dir")
    paths, labels = read_split_list(list_file, num_classes)
    first = image_root / paths[0]
    if not first.is_file():
        raise UserInputError(
            f"image not found: {first}; --data-dir must be the folder that the paths in {list_file.name} "
            f"are relative to")
    train_file = list_file if split == "train" else list_dir / f"{prefix}_train.txt"
    names_from = [(paths, labels)]
    class_counts = None
    if train_file.is_file():
        train_paths, train_labels = (paths, labels) if train_file == list_file else read_split_list(
            train_file, num_classes)
        class_counts = np.bincount(train_labels, minlength=num_classes).tolist()
        names_from.append((train_paths, train_labels))
    class_names = [str(i) for i in range(num_classes)]
    for some_paths, some_labels in names_from:
        for relative_path, label in zip(some_paths, some_labels.tolist()):
            if class_names[label] == str(label):
                class_names[label] = _class_name_from_path(relative_path)
    info = dict(name=name, split=split, root=str(image_root), split_file=str(list_file))
    hint = (f"training class counts of {what} need the training list {train_file}; put it beside "
            f"{list_file.name} or use a checkpoint that stores class counts")
    return FileListDataset(image_root, paths, labels, class_names, class_counts, transform, info, hint)


# --------------------------------------------------------------------------------------------
# A user's ImageFolder (root/<split>/<class>/<image>)
# --------------------------------------------------------------------------------------------

def _scan_class_folder(folder: Path) -> Dict[str, List[str]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise UserInputError(f"no class folders in {folder}; expected <split>/<class name>/<image files>")
    return {
        name: sorted(str(p.relative_to(folder)) for p in (folder / name).rglob("*")
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        for name in classes
    }


def _build_folder(root: Optional[PathLike], split: str, imbalance_factor: Optional[float],
                  transform: Transform, seed: int) -> FileListDataset:
    folder = _require_folder(root, "an image folder dataset")
    aliases = {"val": ["val", "validation"], "validation": ["validation", "val"], "test": ["test"],
               "train": ["train"]}
    candidates = aliases.get(split.strip().lower(), [split])
    split_folder = next((folder / c for c in candidates if (folder / c).is_dir()), None)
    if split_folder is None:
        raise UserInputError(f"split folder not found: {folder / candidates[0]} (layout: <root>/<split>/<class>/<image>)")
    train_folder = folder / "train"
    train_files = _scan_class_folder(train_folder) if train_folder.is_dir() else None
    class_names = list(train_files) if train_files is not None else sorted(_scan_class_folder(split_folder))
    class_index = {name: i for i, name in enumerate(class_names)}

    def subsample(files: Dict[str, List[str]]) -> Tuple[List[str], np.ndarray]:
        paths = [f"{p}" for name in class_names for p in files.get(name, [])]
        labels = np.asarray([class_index[name] for name in class_names for _ in files.get(name, [])], dtype=np.int64)
        if imbalance_factor is None or len(labels) == 0:
            return paths, labels
        n_max = int(np.bincount(labels, minlength=len(class_names)).max())
        keep = make_longtail_indices(labels, imbalance_factor, seed=seed, num_per_class_max=n_max,
                                     num_classes=len(class_names))
        return [paths[i] for i in keep], labels[keep]

    class_counts = None
    if train_files is not None:
        train_paths, train_labels = subsample(train_files)
        class_counts = np.bincount(train_labels, minlength=len(class_names)).tolist()
    if split_folder == train_folder:
        paths, labels = train_paths, train_labels
    else:
        files = _scan_class_folder(split_folder)
        unknown = sorted(set(files) - set(class_index))
        if unknown:
            raise UserInputError(f"class folders {unknown[:5]} in {split_folder} are not in {train_folder}")
        paths = [p for name in class_names for p in files.get(name, [])]
        labels = np.asarray([class_index[name] for name in class_names for _ in files.get(name, [])], dtype=np.int64)
    if not paths:
        raise UserInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_folder}")
    info = dict(name="folder", split=split, root=str(folder),
                imbalance_factor=None if imbalance_factor is None else float(imbalance_factor), seed=seed)
    hint = f"training class counts need {train_folder} (<root>/train/<class>/<image>)"
    return FileListDataset(split_folder, paths, labels, class_names, class_counts, transform, info, hint)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

_ALIASES = {alias: row.name for row in BENCHMARKS.values() for alias in (row.name, *row.aliases)}
_ALIASES.update({"folder": "folder", "imagefolder": "folder", "image_folder": "folder"})
DATASET_NAMES = (*(name for name in BENCHMARKS if name != "demo"), "folder", "demo")


def canonical_dataset_name(name: str) -> str:
    """``"CIFAR-100-LT"`` -> ``"cifar100_lt"``; unknown names raise UserInputError."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = key.replace("cifar_", "cifar")
    if key not in _ALIASES:
        raise UserInputError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}")
    return _ALIASES[key]


def build_dataset(name: str, root: Optional[PathLike] = None, split: str = "train",
                  imbalance_factor: Optional[float] = None, transform: Transform = None, seed: int = 0,
                  split_dir: Optional[PathLike] = None, split_file: Optional[PathLike] = None) -> LongTailDataset:
    """Build one split of a long-tailed dataset.

    name
        ``cifar10_lt``, ``cifar100_lt`` (root: a folder holding ``**/train-*.parquet`` and
        ``**/test-*.parquet`` as the Hub's ``uoft-cs/cifar10|100``; root None loads from the Hub),
        ``tiny_imagenet_lt`` (root like ``shared/data/tiny-imagenet-lt10``), ``imagenet_lt``,
        ``places_lt``, ``inat2018`` (root: the image root; split lists ``<Prefix>_<split>.txt`` in
        ``split_dir``, default root; or one list via ``split_file``), ``folder``
        (``root/<split>/<class>/<image>``) and ``demo`` (shipped; needs no root).
    imbalance_factor
        ``n_max / n_min`` of the training split: default 100 for CIFAR and Tiny-ImageNet, none
        (keep every image) for ``folder``; fixed by the lists for the big benchmarks and the demo.
    seed
        CIFAR-LT / folder subsampling seed (0 reproduces the published CIFAR-LT sets).
    """
    key = canonical_dataset_name(name)
    row = BENCHMARKS.get(key)
    if row is not None and not row.constructed and imbalance_factor is not None:
        raise UserInputError(f"{key} has a fixed long tail; drop the imbalance factor")
    if imbalance_factor is None and row is not None:
        imbalance_factor = row.default_imbalance
    if row is not None and "hub_id" in row.source:
        return _build_cifar_lt(key, root, split, float(imbalance_factor), transform, seed)
    if key == "tiny_imagenet_lt":
        return _build_tiny_imagenet_lt(root, split, float(imbalance_factor), transform)
    if key in _SPLIT_LISTS:
        return _build_split_list(key, root, split, transform, split_dir, split_file)
    if key == "folder":
        return _build_folder(root, split, imbalance_factor, transform, seed)
    return _build_demo(split, transform)

"""Dataset sources on the real shared data, the real split lists, the demo set, and bad input."""
import io

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image as ImageFeature, Value, load_dataset
from PIL import Image

from timm_longtail.data import (
    DATASET_NAMES,
    build_dataset,
    canonical_dataset_name,
    longtail_class_counts,
    make_longtail_indices,
    read_split_list,
)
from timm_longtail.errors import UserInputError

CIFAR10_FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # documented in shared/data/README.md


def jpeg_bytes(seed: int, size=(32, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_jpeg(path, seed: int, truncate: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes(seed)
    path.write_bytes(data[: len(data) // 2] if truncate else data)


def write_image_parquet(path, images, labels, names, label_column="label", extra=None) -> None:
    columns = {"img": [{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(images)], label_column: labels}
    features = {"img": ImageFeature(), label_column: ClassLabel(names=names)}
    for key, values in (extra or {}).items():
        columns[key] = values
        features[key] = Value("int64")
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns, features=Features(features)).to_parquet(str(path))


# ---- CIFAR-10-LT on the real shared copy ---------------------------------------------------------

@pytest.fixture(scope="module")
def cifar10_dir(shared_data):
    return shared_data / "cifar10"


@pytest.mark.slow
def test_cifar10_lt_train_counts_labels_and_pixels(cifar10_dir):
    train = build_dataset("cifar10_lt", cifar10_dir, "train", imbalance_factor=100)
    counts = longtail_class_counts(5000, 10, 100)
    assert train.class_counts == counts and len(train) == sum(counts) == 12_406
    assert np.array_equal(train.targets, np.repeat(np.arange(10), counts))
    assert train.images.shape == (12_406, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.class_names[0] == "airplane" and train.num_classes == 10
    # the stored pixels are the selected source rows, decoded independently through `datasets`
    source = load_dataset("parquet", data_files=str(next(cifar10_dir.rglob("train-*.parquet"))), split="train")
    labels = np.asarray(source.with_format("numpy")["label"])
    selected = make_longtail_indices(labels, 100, seed=0)
    for position in (0, 5000, len(selected) - 1):
        row = source[int(selected[position])]
        assert row["label"] == train.targets[position]
        np.testing.assert_array_equal(np.asarray(row["img"].convert("RGB")), train.images[position])
    image, label = train[0]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 32, 32) and label == 0


def test_cifar10_lt_test_split_carries_training_counts(cifar10_dir):
    test = build_dataset("CIFAR-10-LT", cifar10_dir, "test", imbalance_factor=50)
    assert len(test) == 10_000
    assert test.class_counts == longtail_class_counts(5000, 10, 50)
    assert test.targets[:10].tolist() == CIFAR10_FIRST_TEST_LABELS
    assert np.bincount(test.targets).tolist() == [1000] * 10


def test_cifar100_lt_reads_hub_column_names(tmp_path):
    """uoft-cs/cifar100 names its columns img / fine_label / coarse_label."""
    labels = [c for c in range(100) for _ in range(2)]
    images = [jpeg_bytes(i) for i in range(len(labels))]
    names = [f"class{c}" for c in range(100)]
    for split in ("train", "test"):
        write_image_parquet(tmp_path / "cifar100" / f"{split}-00000-of-00001.parquet", images, labels, names,
                            label_column="fine_label", extra={"coarse_label": [c // 5 for c in labels]})
    train = build_dataset("cifar100_lt", tmp_path, "train", imbalance_factor=2)
    assert train.class_counts == longtail_class_counts(2, 100, 2)
    assert train.class_names[7] == "class7" and train.num_classes == 100
    test = build_dataset("cifar100_lt", tmp_path, "test", imbalance_factor=2)
    assert len(test) == 200 and test.class_counts == train.class_counts


# ---- Tiny-ImageNet-LT ------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_imagenet_lt_if100_train(shared_data):
    train = build_dataset("tiny_imagenet_lt", shared_data / "tiny-imagenet-lt10", "train", imbalance_factor=100)
    counts = longtail_class_counts(500, 200, 100)
    assert len(train) == sum(counts) == 21_549
    assert np.array_equal(train.targets, np.repeat(np.arange(200), counts))
    assert train.images.shape[1:] == (64, 64, 3)
    assert train.class_names == sorted(train.class_names)  # labels follow sorted wnids


def test_tiny_imagenet_lt_if10_counts_match_the_folder(shared_data):
    folder = shared_data / "tiny-imagenet-lt10"
    val = build_dataset("tiny_imagenet_lt", folder, "validation", imbalance_factor=10)
    rows = [line.split("\t") for line in (folder / "classes.tsv").read_text().splitlines()[1:]]
    assert val.class_counts == [int(r[3]) for r in rows]
    assert sum(val.class_counts) == 39_072
    assert val.class_names == [r[1] for r in rows]
    assert len(val) == 10_000 and np.bincount(val.targets).tolist() == [50] * 200


def test_tiny_imagenet_lt_below_folder_imbalance_is_refused(shared_data):
    with pytest.raises(UserInputError, match="IF >= 10"):
        build_dataset("tiny_imagenet_lt", shared_data / "tiny-imagenet-lt10", "validation", imbalance_factor=5)


# ---- split-list benchmarks on the real lists ----------------------------------------------------

@pytest.mark.parametrize("file_name, lines, num_classes", [
    ("ImageNet_LT_val.txt", 20_000, 1000),
    ("ImageNet_LT_test.txt", 50_000, 1000),
    ("Places_LT_train.txt", 62_500, 365),
    ("Places_LT_val.txt", 7_300, 365),
    ("Places_LT_test.txt", 36_500, 365),
    ("iNaturalist18_val.txt", 24_426, 8142),
])
def test_real_split_lists(shared_data, file_name, lines, num_classes):
    paths, labels = read_split_list(shared_data / "lt-splits" / file_name, num_classes)
    assert len(paths) == len(labels) == lines
    assert labels.min() == 0 and labels.max() == num_classes - 1
    assert len(np.unique(labels)) == num_classes
    with pytest.raises(UserInputError, match="outside"):
        read_split_list(shared_data / "lt-splits" / file_name, num_classes - 1)


def _make_listed_images(image_root, list_file, count=3):
    lines = list_file.read_text().splitlines()[:count]
    for i, line in enumerate(lines):
        write_jpeg(image_root / line.rsplit(maxsplit=1)[0], seed=i)
    return [line.rsplit(maxsplit=1) for line in lines]


def test_imagenet_lt_reader(shared_data, tmp_path):
    lists = shared_data / "lt-splits"
    listed = _make_listed_images(tmp_path, lists / "ImageNet_LT_test.txt")
    test = build_dataset("imagenet_lt", tmp_path, "test", split_dir=lists)
    assert len(test) == 50_000 and test.num_classes == 1000
    assert test.class_names[int(listed[0][1])] == listed[0][0].split("/")[1]  # the wnid folder
    image, label = test[0]
    assert image.shape == (3, 32, 32) and label == int(listed[0][1])
    assert not test.has_class_counts  # ImageNet_LT_train.txt is not in the shared lists
    with pytest.raises(UserInputError, match="ImageNet_LT_train.txt"):
        test.class_counts


def test_places_lt_reader_counts_from_training_list(shared_data, tmp_path):
    lists = shared_data / "lt-splits"
    _make_listed_images(tmp_path, lists / "Places_LT_val.txt")
    val = build_dataset("places_lt", tmp_path, "val", split_dir=lists)
    assert len(val) == 7_300 and val.num_classes == 365
    counts = val.class_counts
    assert sum(counts) == 62_500 and max(counts) == 4980 and min(counts) == 5
    assert val[2][0].shape == (3, 32, 32)


def test_inat2018_reader(shared_data, tmp_path):
    lists = shared_data / "lt-splits"
    listed = _make_listed_images(tmp_path, lists / "iNaturalist18_val.txt")
    val = build_dataset("inat2018", tmp_path, "val", split_dir=lists)
    assert len(val) == 24_426 and val.num_classes == 8142
    assert val.class_names[int(listed[0][1])] == "/".join(listed[0][0].split("/")[1:3])
    assert val[1][1] == int(listed[1][1])
    test = build_dataset("inat2018", tmp_path, "test", split_dir=lists)  # no labelled test set: papers test on val
    assert test.info["split"] == "val" and test.info["split_file"] == val.info["split_file"] and len(test) == len(val)


def test_split_list_errors(shared_data, tmp_path):
    lists = shared_data / "lt-splits"
    with pytest.raises(UserInputError, match="image not found"):
        build_dataset("places_lt", tmp_path, "val", split_dir=lists)  # no images under the root
    with pytest.raises(UserInputError, match="data folder not found"):
        build_dataset("places_lt", tmp_path / "missing", "val", split_dir=lists)
    bad = tmp_path / "bad.txt"
    bad.write_text("a/b/c.jpg 0\nno-label-here\n")
    with pytest.raises(UserInputError, match="line 2"):
        read_split_list(bad)
    _make_listed_images(tmp_path, lists / "Places_LT_val.txt", count=1)
    val = build_dataset("places_lt", tmp_path, "val", split_dir=lists)
    with pytest.raises(UserInputError, match="image file not found"):
        val[1]  # listed but absent
    first = tmp_path / read_split_list(lists / "Places_LT_val.txt")[0][0]
    first.write_bytes(first.read_bytes()[:100])
    with pytest.raises(UserInputError, match="truncated"):
        val[0]


# ---- user image folders ----------------------------------------------------------------------

def _image_folder(root, counts, split="train", truncate=None):
    for c, n in enumerate(counts):
        for i in range(n):
            write_jpeg(root / split / f"class_{c}" / f"{i:03d}.jpg", seed=100 * c + i,
                       truncate=truncate == (c, i))


def test_image_folder_with_long_tail_subsampling(tmp_path):
    _image_folder(tmp_path, [20, 20, 20])
    _image_folder(tmp_path, [2, 2, 2], split="val")
    full = build_dataset("folder", tmp_path, "train")
    assert full.class_counts == [20, 20, 20] and full.class_names == ["class_0", "class_1", "class_2"]
    train = build_dataset("folder", tmp_path, "train", imbalance_factor=10)
    assert train.class_counts == longtail_class_counts(20, 3, 10) == [20, 6, 2]
    assert np.bincount(train.targets).tolist() == [20, 6, 2]
    val = build_dataset("folder", tmp_path, "val", imbalance_factor=10)
    assert len(val) == 6 and val.class_counts == [20, 6, 2]
    assert val[5][1] == 2


def test_image_folder_errors(tmp_path):
    _image_folder(tmp_path, [3, 3], truncate=(1, 2))
    with pytest.raises(UserInputError, match="split folder not found"):
        build_dataset("folder", tmp_path, "val")
    train = build_dataset("folder", tmp_path, "train")
    with pytest.raises(UserInputError, match="truncated"):
        train[5]
    write_jpeg(tmp_path / "val" / "stranger" / "0.jpg", seed=1)
    with pytest.raises(UserInputError, match="stranger"):
        build_dataset("folder", tmp_path, "val")


# ---- demo set ------------------------------------------------------------------------------

def test_demo_set_loads_without_arguments():
    train = build_dataset("demo")
    test = build_dataset("demo", split="test")
    assert train.num_classes == test.num_classes == 10
    assert train.class_counts == longtail_class_counts(500, 10, 100) == test.class_counts
    assert np.bincount(train.targets).tolist() == train.class_counts
    assert len(test) == 1000 and np.bincount(test.targets).tolist() == [100] * 10
    assert test[0][0].shape == (3, 32, 32)


@pytest.mark.slow
def test_demo_set_is_the_documented_cifar10_subset(shared_data):
    from timm_longtail.data import DEMO_DIR

    demo = load_dataset("parquet", data_files=str(DEMO_DIR / "train-00000-of-00001.parquet"), split="train")
    source = load_dataset("parquet", data_files=str(next((shared_data / "cifar10").rglob("train-*.parquet"))),
                          split="train").cast_column("img", ImageFeature(decode=False))
    labels = np.asarray(source.with_format("numpy")["label"])
    expected = make_longtail_indices(labels, 100, seed=0, num_per_class_max=500)
    assert demo["source_index"] == expected.tolist()
    raw = demo.cast_column("img", ImageFeature(decode=False))
    for position in (0, 700, len(expected) - 1):
        assert raw[position]["img"]["bytes"] == source[int(expected[position])]["img"]["bytes"]


# ---- names and generic errors ----------------------------------------------------------------

def test_dataset_names():
    assert canonical_dataset_name("CIFAR-100-LT") == "cifar100_lt"
    assert canonical_dataset_name("tiny-imagenet-lt") == "tiny_imagenet_lt"
    assert set(DATASET_NAMES) >= {"cifar10_lt", "cifar100_lt", "tiny_imagenet_lt", "imagenet_lt", "places_lt",
                                  "inat2018", "folder", "demo"}
    with pytest.raises(UserInputError, match="unknown dataset 'mnist'"):
        build_dataset("mnist")


def test_missing_or_wrong_folders(tmp_path):
    with pytest.raises(UserInputError, match="data folder not found"):
        build_dataset("cifar10_lt", tmp_path / "nope")
    with pytest.raises(UserInputError, match="no parquet file"):
        build_dataset("cifar10_lt", tmp_path)
    with pytest.raises(UserInputError, match="needs a data folder"):
        build_dataset("tiny_imagenet_lt")
    with pytest.raises(UserInputError, match="fixed long tail"):
        build_dataset("demo", imbalance_factor=10)
    with pytest.raises(UserInputError, match="unknown split"):
        build_dataset("demo", split="holdout")


def test_truncated_image_in_parquet_is_reported(tmp_path):
    images = [jpeg_bytes(i) for i in range(20)]
    labels = [i % 10 for i in range(20)]
    names = [f"c{i}" for i in range(10)]
    write_image_parquet(tmp_path / "plain_text" / "train-00000-of-00001.parquet", images, labels, names)
    images[3] = images[3][:200]
    write_image_parquet(tmp_path / "plain_text" / "test-00000-of-00001.parquet", images, labels, names)
    assert len(build_dataset("cifar10_lt", tmp_path, "train", imbalance_factor=1)) == 20
    with pytest.raises(UserInputError, match=r"row 3 \(3.jpg\)"):
        build_dataset("cifar10_lt", tmp_path, "test")


def test_hub_source_offline_asks_for_a_local_copy():
    with pytest.raises(UserInputError, match="uoft-cs/cifar100.*--data-dir"):
        build_dataset("cifar100_lt", split="test")  # the test suite runs with HF_HUB_OFFLINE=1


# ---- a folder of some rows stored another way (the lossless CIFAR-10 test head) ------------------

def test_lossless_cifar10_test_head_is_the_first_rows_of_the_jpeg_test_split(shared_data):
    from timm_longtail.data import build_row_subset

    jpeg = build_dataset("cifar10_lt", shared_data / "cifar10", "test")
    lossless, rows = build_row_subset(shared_data / "cifar10-lossless-test-head", jpeg)
    assert rows.tolist() == list(range(1017)) and len(lossless) == 1017
    assert np.bincount(lossless.targets).tolist() == [105, 93, 100, 104, 92, 87, 114, 102, 110, 110]  # data README
    assert lossless.targets[:10].tolist() == CIFAR10_FIRST_TEST_LABELS
    assert lossless.class_names == jpeg.class_names and lossless.class_counts == jpeg.class_counts
    # the same images: the JPEG copy is ~30.5 dB from its original, a neighbouring row ~10 dB
    def psnr(a, b):
        return float(np.mean(10 * np.log10(255.0 ** 2 / ((a.astype(float) - b) ** 2).mean(axis=(1, 2, 3)))))
    assert 29.5 < psnr(lossless.images, jpeg.images[rows]) < 31.5
    assert psnr(lossless.images[1:], jpeg.images[rows[:-1]]) < 15


def test_row_subset_maps_rows_and_refuses_other_images(tmp_path):
    from conftest import write_row_subset
    from timm_longtail.data import build_row_subset

    test = build_dataset("demo", split="test")
    rows = [7, 3, 500, 999]
    subset, found = build_row_subset(write_row_subset(tmp_path / "ok", test.images[rows], test.targets[rows],
                                                      test.class_names, rows), test)
    assert found.tolist() == rows and np.array_equal(subset.images, test.images[rows])
    assert subset.targets.tolist() == test.targets[rows].tolist() and subset.class_counts == test.class_counts
    # without an index column, row i is the dataset's row i
    _, found = build_row_subset(write_row_subset(tmp_path / "head", test.images[:5], test.targets[:5],
                                                 test.class_names), test)
    assert found.tolist() == list(range(5))
    wrong_label = next(r for r in range(1000) if test.targets[r] != test.targets[7])
    cases = [
        ("shifted", dict(rows=[wrong_label, 3, 500, 999]), "not the same images"),
        ("outside", dict(rows=[7, 3, 500, 1000]), "distinct rows of demo test"),
        ("twice", dict(rows=[7, 7, 500, 999], labels=test.targets[[7, 7, 500, 999]]), "distinct rows"),
        ("names", dict(rows=rows, names=[f"c{i}" for i in range(10)]), "are not those of demo test"),
        ("size", dict(rows=rows, images=np.zeros((4, 16, 16, 3), np.uint8)), "16x16 pixels"),
    ]
    for name, change, message in cases:
        folder = write_row_subset(tmp_path / name, change.get("images", test.images[rows]),
                                  change.get("labels", test.targets[rows]), change.get("names", test.class_names),
                                  change["rows"])
        with pytest.raises(UserInputError, match=message):
            build_row_subset(folder, test)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no parquet file for split 'test'"):
        build_row_subset(tmp_path / "empty", test)

"""The lt_accuracy evaluate module, loaded offline, against hand-computed values."""
import evaluate
import pytest

from timm_longtail.data import ShotSplit
from timm_longtail.metrics import LT_ACCURACY_PATH, load_lt_accuracy

# 6 classes; training counts put classes 0-1 in many, 2-3 in medium, 4-5 in few (standard rule)
CLASS_COUNTS = [300, 150, 80, 50, 10, 5]
REFERENCES = [0, 0, 1, 1, 2, 2, 3, 4, 5, 5]
PREDICTIONS = [  # ranked top-5 per sample
    [0, 1, 2, 3, 4],  # right
    [1, 0, 2, 3, 4],  # wrong, in top-5
    [1, 2, 3, 4, 5],  # right
    [1, 0, 2, 3, 4],  # right
    [0, 1, 3, 4, 5],  # wrong, not in top-5
    [2, 0, 1, 3, 4],  # right
    [0, 1, 2, 4, 5],  # wrong, not in top-5
    [0, 1, 2, 3, 4],  # wrong, in top-5
    [5, 0, 1, 2, 3],  # right
    [0, 1, 2, 3, 4],  # wrong, not in top-5
]


@pytest.fixture(scope="module")
def metric():
    return load_lt_accuracy()


def test_hand_computed_values(metric):
    result = metric.compute(predictions=PREDICTIONS, references=REFERENCES, class_counts=CLASS_COUNTS)
    assert result["top1"] == pytest.approx(50.0)  # 5 of 10
    assert result["top5"] == pytest.approx(70.0)  # 7 of 10
    assert result["per_class_accuracy"] == pytest.approx([50.0, 100.0, 50.0, 0.0, 0.0, 50.0])
    assert result["top1_many"] == pytest.approx(75.0)  # mean(50, 100)
    assert result["top1_medium"] == pytest.approx(25.0)  # mean(50, 0)
    assert result["top1_few"] == pytest.approx(25.0)  # mean(0, 50)
    assert result["split_sizes"] == {"many": 2, "medium": 2, "few": 2}
    assert result["per_class_count"] == [2, 2, 2, 1, 1, 2]
    assert result["shot_split"]["inclusive"] is False and "n > 100" in result["shot_split"]["description"]
    assert result["num_samples"] == 10


def test_top1_only_predictions_and_batches(metric):
    for start in range(0, 10, 4):
        metric.add_batch(predictions=[p[0] for p in PREDICTIONS[start:start + 4]],
                         references=REFERENCES[start:start + 4])
    result = metric.compute(class_counts=CLASS_COUNTS)
    assert result["top1"] == pytest.approx(50.0)
    assert result["top5"] is None  # k = 1
    short = metric.compute(predictions=[p[:3] for p in PREDICTIONS], references=REFERENCES, num_classes=6)
    assert short["top5"] is None and short["top1_many"] is None and short["split_sizes"] is None


def test_ncl_rule_and_threshold_overrides(metric):
    counts = [100, 150, 80, 50, 20, 5]  # 100 and 20 sit on the boundaries
    standard = metric.compute(predictions=PREDICTIONS, references=REFERENCES, class_counts=counts)
    ncl = metric.compute(predictions=PREDICTIONS, references=REFERENCES, class_counts=counts, rule="ncl")
    assert standard["class_splits"] == ["medium", "many", "medium", "medium", "medium", "few"]
    assert ncl["class_splits"] == ["many", "many", "medium", "medium", "few", "few"]
    assert ncl["top1_many"] == pytest.approx(75.0) and standard["top1_many"] == pytest.approx(100.0)
    custom = metric.compute(predictions=PREDICTIONS, references=REFERENCES, class_counts=CLASS_COUNTS,
                            many_threshold=200, few_threshold=60)
    assert custom["split_sizes"] == {"many": 1, "medium": 2, "few": 3}
    with pytest.raises(ValueError, match="unknown shot-split rule"):
        metric.compute(predictions=PREDICTIONS, references=REFERENCES, rule="loose")


def test_empty_group_and_unseen_class(metric):
    result = metric.compute(predictions=[[0], [0]], references=[0, 0], class_counts=[500, 300, 3])
    assert result["top1_few"] is None and result["top1_medium"] is None  # no test sample / no class
    assert result["per_class_accuracy"] == [100.0, None, None]


def test_rule_matches_shot_split_class():
    """The module is self-contained; its rule must agree with timm_longtail.data.ShotSplit."""
    metric = load_lt_accuracy()
    counts = list(range(1, 160))
    for rule in ("standard", "ncl"):
        result = metric.compute(predictions=[0], references=[0], class_counts=counts, rule=rule)
        assert result["class_splits"] == ShotSplit.from_rule(rule).class_splits(counts)


def test_plain_evaluate_load_of_the_folder():
    metric = evaluate.load(str(LT_ACCURACY_PATH))
    assert metric.name == "lt_accuracy"
    assert metric.compute(predictions=[1, 2], references=[1, 1], num_classes=3)["top1"] == pytest.approx(50.0)

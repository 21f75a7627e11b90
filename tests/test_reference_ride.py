"""scripts/reference_ride.py: the CIFAR-10 config it derives from RIDE's own, its log summary, and
parking a run across sittings (the reference code itself is not needed for these)."""
import json
from pathlib import Path

import pytest

from conftest import REPO_ROOT, load_script

LOG = """=> reference_ride experts: -c R/experts/config.json (seed 0)
EPOCH 1 lr 0.02 time 120.0s 100.0 img/s loss 17.96917 val_accuracy nan
=> reference_ride experts: -c R/experts/config.json -r R/experts/models/x/y/checkpoint-epoch1.pth (seed 0)
EPOCH 2 lr 0.04 time 110.0s 110.0 img/s loss 14.96186 val_accuracy 0.50000
=> reference_ride router: -c R/router/config.json -r R/experts/models/x/y/checkpoint-epoch2.pth (seed 0)
EPOCH 1 lr 0.01 time 30.0s 400.0 img/s loss 0.90000 val_accuracy 0.52000
"""
COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.fixture(scope="module")
def script():
    return load_script(REPO_ROOT / "scripts" / "reference_ride.py", "reference_ride")


def _test_json(path: Path, per_class, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(train_class_counts=COUNTS, images=10000, top1=sum(per_class) / 10,
                                    per_class_accuracy=per_class, **extra)))


def test_summarize_reads_both_stages_each_epoch_once(script, tmp_path):
    (tmp_path / "ref.log").write_text(LOG)
    _test_json(tmp_path / "experts" / "test.json", [90.0, 80, 80, 70, 70, 60, 60, 50, 40, 30])
    _test_json(tmp_path / "router" / "test.json", [90.0, 80, 80, 70, 70, 60, 60, 50, 40, 40],
               images_by_experts_used=[5000, 1000, 4000], mean_experts_used=1.9)
    summary = script._summarize(tmp_path, tmp_path / "out.json", {"command": "x"})
    assert summary["experts"]["epochs_run"] == 2 and summary["experts"]["sittings"] == 2
    assert summary["experts"]["train_time_s"] == 230.0
    assert summary["experts"]["epochs"][1]["test_top1"] == 50.0 and "test_top1" not in summary["experts"]["epochs"][0]
    assert summary["experts"]["test"]["many"] == 70.0 and summary["experts"]["test"]["medium"] == 35.0  # 8 many, 2 medium
    assert summary["router"]["test"]["mean_experts_used"] == 1.9
    assert json.loads((tmp_path / "out.json").read_text()) == summary


def test_summarize_refuses_a_stage_without_its_final_test_pass(script, tmp_path):
    (tmp_path / "ref.log").write_text(LOG)
    with pytest.raises(SystemExit, match="no final test pass"):
        script._summarize(tmp_path, tmp_path / "out.json", {})
    assert not (tmp_path / "out.json").exists()


def test_the_cifar10_config_changes_only_what_the_docstring_lists(script, tmp_path):
    src = tmp_path / "ride"
    (src / "configs").mkdir(parents=True)
    reference = {"name": "Imbalance_CIFAR100_LT_RIDE", "arch": {"type": "ResNet32Model", "args": {"num_classes": 100}},
                 "data_loader": {"type": "ImbalanceCIFAR100DataLoader", "args": {"batch_size": 128}},
                 "trainer": {"epochs": 200, "save_dir": "saved/", "save_period": 40, "monitor": "max val_accuracy"}}
    (src / script.EXPERTS_CONFIG).write_text(json.dumps(reference))
    config = script.cifar10_config(src, script.EXPERTS_CONFIG, tmp_path / "run", "experts")
    assert config["arch"]["args"] == {"num_classes": 10}
    assert config["data_loader"] == {"type": "ImbalanceCIFAR10DataLoader", "args": {"batch_size": 128}}
    assert config["trainer"] == {"epochs": 200, "save_dir": str(tmp_path / "run" / "experts"), "save_period": 1,
                                 "monitor": "off"}


def test_park_then_unpark_restores_the_newest_checkpoint(script, tmp_path):
    run, parked = tmp_path / "run", tmp_path / "parked"
    for epoch in (40, 41):
        folder = run / "experts" / "models" / "n" / f"t{epoch}"
        folder.mkdir(parents=True)
        (folder / f"checkpoint-epoch{epoch}.pth").write_bytes(f"weights {epoch}".encode())
        (folder / "config.json").write_text("{}")
    (run / "ref.log").write_text(LOG)
    assert script._park(run, parked).name == "checkpoint-epoch41.pth"
    fresh = tmp_path / "fresh"
    script._unpark(fresh, parked)
    restored = script._newest_checkpoint(fresh / "experts")
    assert restored.name == "checkpoint-epoch41.pth" and restored.read_bytes() == b"weights 41"
    assert (restored.parent / "config.json").is_file() and (fresh / "ref.log").read_text() == LOG
    script._unpark(run, parked)  # a run folder with its own checkpoints is left alone
    assert script._newest_checkpoint(run / "experts").parent.name == "t41"

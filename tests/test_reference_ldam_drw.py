"""scripts/reference_ldam_drw.py summarize: a reference run's log, resumed once, read as JSON; and its
checkpoint read as ours."""
import json
from pathlib import Path

import pytest
import timm_longtail  # noqa: F401  before timm
import timm
import torch

from conftest import REPO_ROOT, load_script
from timm_longtail.checkpoint import build_model_from_checkpoint
from timm_longtail.errors import UserInputError


# What the reference code (plus our timing line) prints, cut to the lines summarize reads: a first
# sitting stopped during epoch 2, then a resumed one that runs epoch 2 again and finishes at epoch 3.
LOG = """=> creating model 'resnet32'
EPOCH 0 lr 0.02 time 40.0s 310.0 img/s
EPOCH 1 lr 0.04 time 42.0s 295.0 img/s
val Results: Prec@1 30.000 Prec@5 80.000 Loss 2.00000
val Class Accuracy: [0.5,0.1]
=> creating model 'resnet32'
=> loading checkpoint 'checkpoint/x/ckpt.pth.tar'
EPOCH 2 lr 0.06 time 38.0s 320.0 img/s
EPOCH 3 lr 0.08 time 39.0s 318.0 img/s
val Results: Prec@1 41.500 Prec@5 90.000 Loss 1.50000
val Class Accuracy: [0.7,0.125]
"""


def test_summarize_counts_each_epoch_once_across_sittings(tmp_path):
    script = load_script(REPO_ROOT / "scripts" / "reference_ldam_drw.py", "reference_ldam_drw")
    log = tmp_path / "ref.log"
    log.write_text(LOG)
    out = tmp_path / "out" / "summary.json"
    summary = script._summarize(log, out, {"command": "run"})
    assert json.loads(out.read_text()) == summary
    assert summary["sittings"] == 2 and summary["epochs_run"] == 4
    assert summary["train_time_s"] == pytest.approx(40 + 42 + 38 + 39)
    assert summary["last_epoch"] == {"epoch": 3, "top1": 41.5, "top5": 90.0, "per_class_accuracy": [70.0, 12.5]}
    assert summary["best_evaluated"] == {"epoch": 3, "top1": 41.5}
    assert summary["evaluated_epochs"] == [1, 3]


def test_an_epoch_run_again_after_a_stop_keeps_its_last_record(tmp_path):
    script = load_script(REPO_ROOT / "scripts" / "reference_ldam_drw.py", "reference_ldam_drw")
    log = tmp_path / "ref.log"
    log.write_text(LOG.replace("=> loading checkpoint", "EPOCH 1 lr 0.04 time 99.0s 125.0 img/s\n=> loading checkpoint"))
    summary = script._summarize(log, tmp_path / "s.json", {})
    assert summary["epochs_run"] == 4 and summary["train_time_s"] == pytest.approx(40 + 99 + 38 + 39)


def test_a_log_without_a_test_pass_is_one_clear_error(tmp_path):
    script = load_script(REPO_ROOT / "scripts" / "reference_ldam_drw.py", "reference_ldam_drw")
    log = tmp_path / "ref.log"
    log.write_text("=> creating model 'resnet32'\nEPOCH 0 lr 0.02 time 40.0s 310.0 img/s\n")
    with pytest.raises(SystemExit, match="has no test evaluation"):
        script._summarize(log, tmp_path / "s.json", {})
    assert not (tmp_path / "s.json").exists()


LDAM_NETWORK = dict(model_name="ride_resnet32_2e", num_experts=1, reduce_dimension=False)
"""Cao et al.'s resnet32(use_norm=True) as our model: configs/ldam_drw_r32_cifar10lt.yaml's network."""


def _reference_style_checkpoint(path: Path, extra: dict | None = None) -> dict:
    """Our ResNet-32's weights under the reference's names (conv1, layer1..3, linear as (in, out)),
    saved the way its cifar_train.py saves them (under DataParallel's ``module.``)."""
    model = timm.create_model(LDAM_NETWORK["model_name"], num_classes=10, num_experts=1, reduce_dimension=False)
    torch.nn.init.normal_(model.heads[0].fc.weight)  # not a symmetric head, so a lost transpose shows
    state = {}
    for key, value in model.state_dict().items():
        name = "linear.weight" if key == "heads.0.fc.weight" else key.split(".", 2)[-1] if key.startswith(
            "experts.") else key.removeprefix("trunk.")
        state[f"module.{name}"] = value.t() if name == "linear.weight" else value
    state.update(extra or {})
    torch.save(dict(epoch=200, arch="resnet32", state_dict=state, best_acc1=torch.tensor(70.0), optimizer={}), path)
    return model.state_dict()


def test_the_reference_checkpoint_loads_as_ours_with_every_tensor_in_its_place(tmp_path):
    """The run's ckpt.pth.tar goes straight to validate.py / analyze.py (timm_longtail.convert reads it)."""
    expected = _reference_style_checkpoint(tmp_path / "ckpt.pth.tar")
    model, checkpoint = build_model_from_checkpoint(tmp_path / "ckpt.pth.tar")
    assert checkpoint["model_name"] == LDAM_NETWORK["model_name"] and checkpoint["model_kwargs"]["num_experts"] == 1
    assert checkpoint["epoch"] == 200 and len(checkpoint["converted_from"]["sha256"]) == 64
    for key, value in model.state_dict().items():
        assert (value == expected[key]).all(), key


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    _reference_style_checkpoint(tmp_path / "ckpt.pth.tar", {"module.layer4.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(UserInputError, match="layer4.0.conv1.weight"):
        build_model_from_checkpoint(tmp_path / "ckpt.pth.tar")

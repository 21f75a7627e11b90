"""train.py's assembly: the distillation teacher as ``build_teacher`` hands it to the objective."""
from __future__ import annotations

import pytest
import timm
import torch

import timm_longtail  # noqa: F401  (registers the models)
from timm_longtail.checkpoint import load_checkpoint, save_checkpoint
from timm_longtail.training.assembly import Checkpoints, build_teacher

COUNTS = [int(500 * 10 ** (-i / 9)) for i in range(10)]


@pytest.fixture
def teacher_checkpoint(tmp_path):
    """A 2-expert RIDE model whose BatchNorm running statistics are far from any batch's."""
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_2e", num_classes=10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(0.5)
            module.running_var.fill_(4.0)
    path = tmp_path / "last.pth"
    save_checkpoint(path, model, model_name="ride_resnet32_2e", class_counts=COUNTS)
    return load_checkpoint(path), model


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_the_teacher_normalises_as_its_bn_mode_says(teacher_checkpoint, bn_mode):
    ckpt, model = teacher_checkpoint
    teacher = build_teacher(Checkpoints(teacher=ckpt), 10, torch.device("cpu"), bn_mode)
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = teacher(x, mode="ensemble")
        expected = model.train(bn_mode == "train")(x, mode="ensemble")  # batch vs running statistics
        other = model.train(bn_mode != "train")(x, mode="ensemble")
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, other, atol=1e-3)

"""Checkpoints saved by the reference trainers themselves (tests/convert/fixtures, made by
scripts/make_reference_fixtures.py from RIDE's, NCL's and LDAM-DRW's own code) load with the
reference's logits in every forward mode: through timm.create_model, through the converted folder,
and through validate.py's checkpoint loader."""
import json
from pathlib import Path

import pytest
import timm_longtail  # noqa: F401  before timm
import timm
import torch
from safetensors.torch import load_file

from timm_longtail.checkpoint import build_model_from_checkpoint
from timm_longtail.convert.__main__ import main as convert_main
from timm_longtail.hub import load_local_folder
from timm_longtail.hub.push import check_export_folder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# fixture, its file, the model it loads into, keywords, the scale between the reference's outputs and ours
CASES = [
    ("ride_r32_3e_ea_cifar100", ".pth", "ride_resnet32_3e", {}, 1.0),
    ("ride_r32_2e_ea_cifar10_dataparallel", ".pth", "ride_resnet32_2e", {}, 1.0),
    ("ride_r32_2e_stage1_cifar100", ".pth", "ride_resnet32_2e", {}, 1.0),
    ("ncl_r32_2e_cifar10", ".pth", "nclpp_resnet32", {}, 1.0),
    ("ldam_drw_r32_cifar10", ".pth.tar", "ride_resnet32_2e", {}, 30.0),  # LDAM-DRW's network outputs cosines; s = 30
]
TOLERANCE = 1e-4


def _expected(name):
    return load_file(str(FIXTURES / f"{name}.expected.safetensors"))


def _check_every_mode(model, name, scale):
    """Ensemble, each expert and (with a router) routed logits and experts-used counts."""
    expected = _expected(name)
    images = expected["images"]
    model.eval()
    checked = []
    with torch.no_grad():
        if "cosines" in expected:
            assert torch.allclose(model(images), scale * expected["cosines"], atol=TOLERANCE, rtol=0)
            assert torch.allclose(model(images, mode="expert:0"), scale * expected["cosines"], atol=TOLERANCE, rtol=0)
            return ["ensemble", "expert:0"]
        assert torch.allclose(model(images), expected["ensemble"], atol=TOLERANCE, rtol=0)
        checked.append("ensemble")
        for i in range(model.num_experts):
            assert torch.allclose(model(images, mode=f"expert:{i}"), expected[f"expert_{i}"], atol=TOLERANCE, rtol=0)
            checked.append(f"expert:{i}")
        if "routed" in expected:
            logits, used = model.forward_routed(images)
            assert torch.equal(used, expected["experts_used"].to(used.dtype))
            assert torch.allclose(logits, expected["routed"], atol=TOLERANCE, rtol=0)
            assert torch.allclose(model(images, mode="routed"), expected["routed"], atol=TOLERANCE, rtol=0)
            checked.append("routed")
        else:
            with pytest.raises(Exception, match="router"):
                model(images, mode="routed")
    return checked


@pytest.mark.parametrize("name,ext,model_name,kwargs,scale", CASES, ids=[c[0] for c in CASES])
def test_timm_create_model_loads_the_reference_file_with_its_logits(name, ext, model_name, kwargs, scale):
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(FIXTURES / f"{name}{ext}")),
                              **kwargs)
    checked = _check_every_mode(model, name, scale)
    assert checked == model.forward_modes() or "routed" not in model.forward_modes()


@pytest.mark.parametrize("name,ext,model_name,kwargs,scale", CASES, ids=[c[0] for c in CASES])
def test_validate_checkpoint_loader_converts_the_reference_file(name, ext, model_name, kwargs, scale):
    model, checkpoint = build_model_from_checkpoint(FIXTURES / f"{name}{ext}")
    assert checkpoint["model_name"] == model_name
    assert checkpoint["converted_from"]["sha256"] and checkpoint["converted_from"]["file"] == f"{name}{ext}"
    _check_every_mode(model, name, scale)


def test_the_experts_used_counts_of_the_fixture_cover_one_to_three_experts():
    """The 3-expert fixture's router sends samples to 1, 2 and 3 experts, so routing is tested in full."""
    assert set(_expected("ride_r32_3e_ea_cifar100")["experts_used"].tolist()) == {1, 2, 3}


@pytest.mark.parametrize("name,ext,tag", [
    ("ride_r32_3e_ea_cifar100", ".pth", None),
    ("ncl_r32_2e_cifar10", ".pth", "ncl_cifar10_lt_if100"),
    ("ldam_drw_r32_cifar10", ".pth.tar", "ldamdrw_cifar10_lt_if100"),
])
def test_convert_writes_a_folder_that_loads_with_the_reference_logits(tmp_path, name, ext, tag, capsys):
    out = tmp_path / "folder"
    argv = [str(FIXTURES / f"{name}{ext}"), "--out", str(out)] + (["--tag", tag] if tag else [])
    assert convert_main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    config = json.loads((out / "config.json").read_text())
    section = config["timm_longtail"]
    assert section["converted_from"]["file"] == f"{name}{ext}" and len(section["converted_from"]["sha256"]) == 64
    card = (out / "README.md").read_text()
    assert "not trained by this project" in card and section["converted_from"]["sha256"] in card
    scale = 30.0 if name.startswith("ldam") else 1.0
    _check_every_mode(load_local_folder(out), name, scale)
    _check_every_mode(timm.create_model(f"local-dir:{out}", pretrained=True), name, scale)
    assert [p.name for p in check_export_folder(out)] == ["README.md", "config.json", "model.safetensors"]  # hub push takes it


def test_convert_infers_model_and_tag_from_ride_config_and_names_the_authors_figures(tmp_path, capsys):
    out = tmp_path / "ride"
    assert convert_main([str(FIXTURES / "ride_r32_3e_ea_cifar100.pth"), "--out", str(out)]) == 0
    assert "ride_resnet32_3e.ride_cifar100_lt_if100" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "| 48.6 | 67.0 | 49.9 | 25.7 |" in card  # the authors' RIDE 3e figures, labelled as theirs
    assert "EA router (stage 2)" in card and "license: mit" in card


@pytest.mark.slow
def test_convert_eval_measures_every_forward_mode(tmp_path, shared_data, capsys):
    out = tmp_path / "ride"
    assert convert_main([str(FIXTURES / "ride_r32_2e_ea_cifar10_dataparallel.pth"), "--out", str(out),
                         "--eval-data-dir", str(shared_data / "cifar10"), "--eval-samples", "100", "--workers", "0"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["forward_mode"] for r in rows] == ["ensemble", "expert:0", "expert:1", "routed"]
    assert all(r["num_samples"] == 100 for r in rows)
    assert "| `routed` |" in (out / "README.md").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--model", "ride_resnet32_4e"], "ride_resnet32_3e"),
    (["--tag", "ride_cifar10_lt_if100"], "100 classes"),
    (["--tag", "ride_imagenet_lt"], "1000 classes"),
    (["--model", "nclpp_resnet32"], "not nclpp_resnet32"),
])
def test_convert_overrides_are_checked_against_the_file(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert convert_main([str(FIXTURES / "ride_r32_3e_ea_cifar100.pth"), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists() and not any(tmp_path.iterdir())


def test_an_ncl_file_without_tag_asks_for_one(tmp_path, capsys):
    assert convert_main([str(FIXTURES / "ncl_r32_2e_cifar10.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "pass --tag" in capsys.readouterr().err


@pytest.mark.parametrize("model_name,kwargs,message", [
    ("ride_resnet32_4e", {}, "ride_resnet32_3e"),
    ("ride_resnet32_3e", {"num_classes": 10}, "num_classes=10"),
    ("nclpp_resnet32", {}, "not nclpp_resnet32"),
    ("ride_resnet50_3e", {}, "not ride_resnet50_3e"),
])
def test_create_model_refuses_a_file_of_another_architecture_or_size(model_name, kwargs, message):
    with pytest.raises(timm_longtail.errors.UserInputError, match=message):
        timm.create_model(model_name, pretrained=True, **kwargs,
                          pretrained_cfg_overlay=dict(file=str(FIXTURES / "ride_r32_3e_ea_cifar100.pth")))

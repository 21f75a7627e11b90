"""timm citizenship: classifier API, features_only, num_classes / in_chans, file overlay."""
import pytest
import timm
import torch
from safetensors.torch import save_file

import timm_longtail  # noqa: F401


@pytest.mark.parametrize("name,size,levels", [
    ("ride_resnet32_3e", 32, [(16, 1), (16, 1), (24, 2), (48, 4)]),
    ("ride_resnet50_2e", 64, [(64, 2), (256, 4), (512, 8), (768, 16), (1536, 32)]),
    ("nclpp_resnet32", 32, [(16, 1), (16, 1), (32, 2), (64, 4)]),
])
@torch.no_grad()
def test_features_only(name, size, levels):
    model = timm.create_model(name, features_only=True).eval()
    assert [(c, r) for c, r in zip(model.feature_info.channels(), model.feature_info.reduction())] == levels
    feats = model(torch.randn(2, 3, size, size))
    assert [f.shape[1] for f in feats] == [c for c, _ in levels]
    assert [size // f.shape[-1] for f in feats] == [r for _, r in levels]


@torch.no_grad()
def test_features_only_out_indices_follow_selected_expert():
    full = timm.create_model("ride_resnet32_3e", num_classes=10).eval()
    feats = timm.create_model("ride_resnet32_3e", num_classes=10, features_only=True, out_indices=(3,)).eval()
    feats.model.load_state_dict(full.state_dict())
    x = torch.randn(2, 3, 32, 32)
    (last,) = feats(x)
    assert torch.allclose(last, full.forward_features(x, mode="expert:0"), atol=1e-5)


@torch.no_grad()
def test_reset_classifier_resets_every_head_and_router():
    model = timm.create_model("ride_resnet32_3e", num_classes=100).eval()
    model.reset_classifier(7)
    assert model.num_classes == 7 and all(h.fc.out_features == 7 for h in model.heads)
    assert len(model.get_classifier()) == 3
    assert model.router.top_k == 7 and not model.router_trained
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)


@torch.no_grad()
def test_num_classes_in_chans_global_pool():
    model = timm.create_model("ride_resnet50_2e", num_classes=37, in_chans=1, global_pool="max").eval()
    assert model(torch.randn(1, 1, 96, 80)).shape == (1, 37)  # any input size works (global pooling)
    model = timm.create_model("nclpp_resnet50", num_classes=5, num_experts=3).eval()
    assert model.num_experts == 3 and model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert model.heads[0].fc.bias is not None and model.heads[0].fc.scale == 16.0


@pytest.mark.parametrize("name", ["ride_resnet32_2e", "nclpp_resnet32"])
@torch.no_grad()
def test_pretrained_file_overlay_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    if model.has_router:
        model.mark_router_trained()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert loaded.router_trained == model.has_router
    fresh = timm.create_model(name).eval()
    assert not torch.equal(fresh(x), loaded(x))

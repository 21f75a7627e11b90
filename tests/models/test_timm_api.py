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


@pytest.mark.parametrize("mode", ["ensemble", "expert:2"])
@torch.no_grad()
def test_forward_intermediates_is_one_pass_with_the_modes_final_features(mode):
    model = timm.create_model("ride_resnet32_3e", num_classes=10).eval().set_forward_mode(mode)
    x = torch.randn(2, 3, 32, 32)
    calls = []
    handles = [model.trunk.register_forward_hook(lambda *_: calls.append("trunk"))]
    handles += [m.register_forward_pre_hook(lambda *_, i=i: calls.append(i)) for i, m in enumerate(
        model.trunk.children())]
    final, intermediates = model.forward_intermediates(x)
    for handle in handles:
        handle.remove()
    assert calls.count(0) == 1  # the stem ran once (forward_features used to run it a second time)
    assert torch.allclose(final, model.forward_features(x), atol=1e-5)
    assert len(intermediates) == len(model.feature_info)
    assert model.forward_intermediates(x, indices=[1], intermediates_only=True, stop_early=True)[0].shape[1] == 16


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ride_resnet32_3e", "nclpp_resnet32", "ride_resnet50_2e"])
def test_grad_checkpointing_recomputes_and_gives_the_same_gradients(name, monkeypatch):
    import torch.utils.checkpoint

    x, target = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    grads = []
    for enabled in (False, True):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=10).train()
        model.set_grad_checkpointing(enabled)
        checkpointed = []
        original = torch.utils.checkpoint.checkpoint
        monkeypatch.setattr(torch.utils.checkpoint, "checkpoint",
                            lambda *a, **k: (checkpointed.append(1), original(*a, **k))[1])
        loss = torch.nn.functional.cross_entropy(model.forward_train(x)["logits"].mean(0), target)
        loss.backward()
        monkeypatch.undo()
        assert bool(checkpointed) == enabled  # timm's --grad-checkpointing reaches the stages
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], atol=1e-5, rtol=1e-4), key


@pytest.mark.slow
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


@pytest.mark.slow
@torch.no_grad()
def test_num_classes_in_chans_global_pool():
    model = timm.create_model("ride_resnet50_2e", num_classes=37, in_chans=1, global_pool="max").eval()
    assert model(torch.randn(1, 1, 96, 80)).shape == (1, 37)  # any input size works (global pooling)
    model = timm.create_model("nclpp_resnet50", num_classes=5, num_experts=3).eval()
    assert model.num_experts == 3 and model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert model.heads[0].fc.bias is not None and model.heads[0].fc.scale == 16.0


@pytest.mark.slow
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

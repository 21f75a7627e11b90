"""Forward modes of the shared multi-expert machinery."""
import pytest
import timm
import torch

import timm_longtail  # noqa: F401
from timm_longtail.errors import UserInputError


@pytest.fixture(scope="module")
def ride():
    torch.manual_seed(0)
    return timm.create_model("ride_resnet32_4e", num_classes=10).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_ensemble_is_mean_of_single_experts(ride, images):
    singles = torch.stack([ride(images, mode=f"expert:{i}") for i in range(ride.num_experts)])
    assert torch.allclose(ride(images), singles.mean(0), atol=1e-5)
    assert torch.allclose(ride(images, mode="ensemble"), singles.mean(0), atol=1e-5)
    assert not torch.allclose(singles[0], singles[1])  # the experts really differ


@torch.no_grad()
def test_routed_forced_on_is_ensemble_off_is_expert0(ride, images):
    on, used_on = ride.forward_routed(images, force=True)
    off, used_off = ride.forward_routed(images, force=False)
    assert torch.allclose(on, ride(images, mode="ensemble"), atol=1e-5)
    assert torch.allclose(off, ride(images, mode="expert:0"), atol=1e-5)
    assert used_on.tolist() == [4] * 6 and used_off.tolist() == [1] * 6


@torch.no_grad()
def test_untrained_router_refuses_routed_mode(ride, images):
    assert not ride.router_trained and "routed" not in ride.forward_modes()
    with pytest.raises(UserInputError, match="never been trained"):
        ride(images, mode="routed")


@torch.no_grad()
def test_routed_mode_mixes_expert_counts_and_matches_full_computation():
    torch.manual_seed(3)
    model = timm.create_model("ride_resnet32_4e", num_classes=10).eval()
    model.mark_router_trained()
    images = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    # bias router 0 to be undecided so samples split between stopping and going on
    with torch.no_grad():
        model.router.out.bias.fill_(0.0)
        outputs = model.forward_train(images)
        scores = model.forward_router(outputs["features"], outputs["logits"])
        model.router.out.bias.sub_(scores[0].median())
    model.set_forward_mode("routed")
    logits, used = model.forward_routed(images)
    assert torch.equal(model(images), logits)  # the routed mode's plain forward gives the same logits
    assert used.shape == (64,) and used.min() >= 1 and used.max() <= 4
    assert len(set(used.tolist())) > 1
    # lazy per-sample execution equals routing computed from every expert's outputs
    outputs = model.forward_train(images)
    reference, reference_used = model.route_from_outputs(outputs["features"], outputs["logits"])
    assert torch.equal(used, reference_used)
    assert torch.allclose(logits, reference, atol=1e-5)
    # forward_features + forward_head follow the same routing
    assert torch.allclose(model.forward_head(model.forward_features(images)), logits, atol=1e-5)
    # each sample's output is the mean of exactly the experts it used
    for i in (0, 1):
        k = int(used[i])
        assert torch.allclose(logits[i], outputs["logits"][:k, i].mean(0), atol=1e-5)


@torch.no_grad()
def test_forward_train_shapes_and_router_logits(ride, images):
    out = ride.forward_train(images)
    assert out["logits"].shape == (4, 6, 10) and out["features"].shape == (4, 6, 48)
    assert torch.allclose(out["logits"].mean(0), ride(images), atol=1e-5)
    assert ride.forward_router(out["features"], out["logits"]).shape == (3, 6)


@torch.no_grad()
def test_set_forward_mode_and_features_head_split(ride, images):
    try:
        ride.set_forward_mode("expert:2")
        assert ride.forward_mode == "expert:2"
        feats = ride.forward_features(images)
        assert feats.shape[1] == ride.expert_dim
        assert torch.allclose(ride.forward_head(feats), ride(images, mode=2), atol=1e-5)
        assert ride.forward_head(feats, pre_logits=True).shape == (6, 48)
    finally:
        ride.set_forward_mode("ensemble")
    feats = ride.forward_features(images)
    assert feats.shape[1] == ride.num_features == 4 * 48
    assert torch.allclose(ride.forward_head(feats), ride(images), atol=1e-5)


@pytest.mark.parametrize("mode,message", [
    ("expert:4", "out of range"), ("expert:x", "expert:<index>"), ("best", "unknown forward mode"), (7, "out of range"),
])
def test_bad_modes_are_clear(ride, mode, message):
    with pytest.raises(UserInputError, match=message):
        ride.set_forward_mode(mode)


def test_nclpp_has_no_routed_mode():
    model = timm.create_model("nclpp_resnet32", num_classes=10)
    assert model.forward_modes() == ["ensemble", "expert:0", "expert:1"]
    with pytest.raises(UserInputError, match="router"):
        model.set_forward_mode("routed")


@torch.no_grad()
def test_nclpp_experts_are_independent_networks():
    model = timm.create_model("nclpp_resnet32", num_classes=10, num_experts=3).eval()
    assert len(list(model.trunk.children())) == 0
    images = torch.randn(2, 3, 32, 32)
    single = model(images, mode="expert:1")
    with torch.no_grad():
        for p in model.experts[0].parameters():
            p.add_(1.0)
    assert torch.equal(single, model(images, mode="expert:1"))

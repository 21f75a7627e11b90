"""Compute per forward mode, counted with torch's flop counter."""
import pytest
import timm
import torch

import timm_longtail  # noqa: F401
from timm_longtail.errors import UserInputError
from timm_longtail.models import count_macs, measure_compute


@pytest.fixture(scope="module")
def model():
    return timm.create_model("ride_resnet32_3e", num_classes=10).eval()


@pytest.mark.slow
def test_parts_add_up_to_whole_forward(model):
    profile = measure_compute(model, (3, 32, 32))
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        # the whole forward also averages the experts' logits (E x C elements): a few MACs more
        whole = count_macs(lambda: model(x, mode="ensemble"))
        assert 0 <= whole - profile.macs_per_image("ensemble") <= model.num_experts * model.num_classes
        assert count_macs(lambda: model(x, mode="expert:1")) == profile.macs_per_image("expert:1")
    assert profile.flops_per_image("ensemble") == 2 * profile.macs_per_image("ensemble")


def test_routed_cost_follows_histogram(model):
    profile = measure_compute(model, (3, 32, 32))
    one = profile.macs_per_image("routed", [1, 0, 0])
    three = profile.macs_per_image("routed", [0, 0, 5])
    assert one == pytest.approx(profile.macs_per_image("expert:0") + profile.router_macs[0])
    assert three == pytest.approx(profile.macs_per_image("ensemble") + sum(profile.router_macs))
    assert profile.macs_per_image("routed", [1, 0, 1]) == pytest.approx((one + three) / 2)
    with pytest.raises(UserInputError, match="experts_used_hist"):
        profile.macs_per_image("routed")


def test_elementwise_switch(model):
    with_bn = measure_compute(model, (3, 32, 32)).macs_per_image()
    convs_only = measure_compute(model, (3, 32, 32), count_elementwise=False).macs_per_image()
    assert convs_only < with_bn < 1.03 * convs_only

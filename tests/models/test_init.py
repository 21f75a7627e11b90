"""Weight initialisation: each reference's statistics by default, timm's on request."""
import math

import pytest
import timm
import torch
import torch.nn as nn

import timm_longtail  # noqa: F401
from timm_longtail.errors import UserInputError
from timm_longtail.models._experts import CosineLinear


def _convs(model, min_fan=500):
    """Convs large enough for a stable std estimate."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight[0].numel() * m.out_channels >= min_fan]


def _fan_in(conv):
    return conv.weight[0].numel()


def _fan_out(conv):
    return conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]


def _assert_std(convs, expected_std, rel=0.12):
    for conv in convs:
        measured, expected = conv.weight.std().item(), expected_std(conv)
        assert measured == pytest.approx(expected, rel=rel), (conv, measured, expected)


def _bn_weights(model):
    return torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])


def test_ride_cifar_reference_is_kaiming_fan_in_and_unit_norm_cosine_rows():
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10)
    _assert_std(_convs(model), lambda c: math.sqrt(2.0 / _fan_in(c)))
    assert torch.all(_bn_weights(model) == 1)
    for module in model.modules():
        if isinstance(module, CosineLinear):
            torch.testing.assert_close(module.weight.norm(dim=1), torch.ones(10))
    # the stem conv has 27 inputs: fan-in sqrt(2/27) differs from fan-out sqrt(2/144) by 2.3x
    stem = model.trunk.conv1.weight
    assert stem.std().item() > 1.6 * math.sqrt(2.0 / 144)


def test_ride_imagenet_reference_is_fan_out_with_no_zeroed_bn():
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet50_2e", num_classes=20)
    _assert_std(_convs(model, min_fan=20000), lambda c: math.sqrt(2.0 / _fan_out(c)))
    assert torch.all(_bn_weights(model) == 1)  # timm would zero every bottleneck's bn3


def test_nclpp_imagenet_reference_is_pytorch_default():
    torch.manual_seed(0)
    model = timm.create_model("nclpp_resnet50", num_classes=20)
    # kaiming_uniform_(a=sqrt 5): U(±1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
    _assert_std(_convs(model, min_fan=20000), lambda c: 1.0 / math.sqrt(3.0 * _fan_in(c)))
    assert torch.all(_bn_weights(model) == 1)
    head = model.heads[0].fc
    bound = 1.0 / math.sqrt(head.in_features)
    assert head.weight.abs().max().item() <= bound and head.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert torch.all(head.bias == 0)


def test_nclpp_cifar_reference_is_kaiming_fan_in():
    torch.manual_seed(0)
    model = timm.create_model("nclpp_resnet32", num_classes=10)
    _assert_std(_convs(model), lambda c: math.sqrt(2.0 / _fan_in(c)))


@pytest.mark.parametrize("name", ["ride_resnet32_3e", "ride_resnet50_2e", "nclpp_resnet50"])
def test_timm_init_on_request(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, weight_init="timm")
    _assert_std(_convs(model, min_fan=20000 if "50" in name else 500), lambda c: math.sqrt(2.0 / _fan_out(c)))
    if "50" in name:  # zero_init_last on every bottleneck
        assert sum(1 for m in model.modules() if hasattr(m, "bn3") and torch.all(m.bn3.weight == 0)) > 0
        assert not torch.all(_bn_weights(model) == 1)


def test_unknown_init_is_a_clear_error():
    with pytest.raises(UserInputError, match="weight_init"):
        timm.create_model("ride_resnet32_2e", weight_init="xavier")

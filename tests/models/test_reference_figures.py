"""Parameter counts and MACs against the RIDE reference's published figures (code-facts.md).

The figures on the right are the reference's; the left side is computed from our models.
"""
import pytest
import timm

import timm_longtail  # noqa: F401
from timm_longtail.models import measure_compute

CIFAR, IMAGENET = (3, 32, 32), (3, 224, 224)

# The reference's ResNet-32 figures are its CIFAR-100-LT models': 100 classes, whatever a variant's default tag
CIFAR100 = dict(num_classes=100)

# (model, kwargs, input size, reference params in M or None, reference GMACs with all experts or None)
REFERENCE = [
    ("ride_resnet32_2e", dict(CIFAR100, num_experts=1, reduce_dimension=False), CIFAR, 0.47, 0.070),
    ("ride_resnet32_3e", CIFAR100, CIFAR, 0.78, 0.102),
    ("ride_resnet32_4e", CIFAR100, CIFAR, None, 0.128),
    ("ride_resnet50_2e", dict(num_experts=1, reduce_dimension=False), IMAGENET, None, 4.13),
    ("ride_resnet50_2e", {}, IMAGENET, None, 4.50),
    ("ride_resnet50_3e", {}, IMAGENET, 43.7, 5.83),
    ("ride_resnet50_4e", {}, IMAGENET, None, 7.16),
    ("ride_resnext50_32x4d_3e", {}, IMAGENET, 42.9, 6.13),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs,size,ref_params,ref_gmacs", REFERENCE)
def test_matches_reference_within_one_percent(name, kwargs, size, ref_params, ref_gmacs):
    model = timm.create_model(name, **kwargs)
    if ref_params is not None:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert params == pytest.approx(ref_params, rel=0.01)
    gmacs = measure_compute(model, size).macs_per_image("ensemble") / 1e9
    assert gmacs == pytest.approx(ref_gmacs, rel=0.01)


def test_ride_one_expert_is_plain_resnet32_of_nclpp():
    ride = timm.create_model("ride_resnet32_2e", num_experts=1, reduce_dimension=False)
    plain = timm.create_model("nclpp_resnet32", num_experts=1)
    conv = lambda m: sum(p.numel() for n, p in m.named_parameters() if "heads" not in n)  # noqa: E731
    assert conv(ride) == conv(plain)

"""Every variant is registered with timm; only published ``<model>.<tag>`` cfgs have a weight source."""
import pytest
import timm

import timm_longtail  # noqa: F401
from timm_longtail.errors import UserInputError
from timm_longtail.models._cfgs import HF_ORG, hub_name, hub_repo_id
from timm_longtail.models.weights import PUBLISHED_WEIGHTS

RIDE_NAMES = {f"ride_{arch}_{n}e" for arch in ("resnet32", "resnet50", "resnext50_32x4d", "resnet152") for n in (2, 3, 4, 6)}
NCLPP_NAMES = {"nclpp_resnet32", "nclpp_resnet50", "nclpp_resnext50", "nclpp_resnext50_32x4d", "nclpp_resnet152"}


def _has_published_tag(name: str) -> bool:
    """Whether any registered tag of ``name`` has published weights."""
    return any(hub_name(name, t.split(".", 1)[1]) in PUBLISHED_WEIGHTS for t in timm.list_models(name, include_tags=True))


def test_all_variants_listed():
    assert set(timm.list_models("ride_*")) == RIDE_NAMES
    assert set(timm.list_models("nclpp_*")) == NCLPP_NAMES


@pytest.mark.parametrize("name", sorted(RIDE_NAMES | NCLPP_NAMES))
def test_cfgs_have_weights_only_when_published(name):
    tagged = timm.list_models(name, include_tags=True)
    assert tagged, f"{name} registers no tag"
    for full_name in tagged:
        cfg = timm.models.get_pretrained_cfg(full_name)
        assert len(cfg.input_size) == 3 and cfg.mean and cfg.std and cfg.num_classes > 0
        published = hub_name(name, cfg.tag) in PUBLISHED_WEIGHTS
        assert bool(cfg.has_weights) == published, full_name
        assert cfg.hf_hub_id == (hub_repo_id(name, cfg.tag) if published else None)
        assert hub_repo_id(name, cfg.tag).startswith(f"{HF_ORG}/")
    default = timm.models.get_pretrained_cfg(name)
    if _has_published_tag(name):
        assert default.has_weights, f"{name}'s default tag {default.tag} has no weights but another tag does"


def test_list_pretrained_lists_exactly_the_published_table():
    ours = set(timm.list_pretrained("ride_*")) | set(timm.list_pretrained("nclpp_*"))
    tagged = {full for name in RIDE_NAMES | NCLPP_NAMES for full in timm.list_models(name, include_tags=True)}
    expected = {full for full in tagged if hub_name(*full.split(".", 1)) in PUBLISHED_WEIGHTS}
    assert ours == expected
    assert {hub_name(*name.split(".", 1)) for name in ours} == set(PUBLISHED_WEIGHTS)


def test_alias_shares_structure_and_weights_repo():
    alias, canonical = timm.create_model("nclpp_resnext50"), timm.create_model("nclpp_resnext50_32x4d")
    assert sum(p.numel() for p in alias.parameters()) == sum(p.numel() for p in canonical.parameters())
    assert alias.pretrained_cfg.get("hf_hub_id") == canonical.pretrained_cfg.get("hf_hub_id")
    assert hub_repo_id("nclpp_resnext50", "imagenet_lt") == f"{HF_ORG}/nclpp_resnext50_32x4d.imagenet_lt"


def test_dataset_tag_sets_defaults():
    model = timm.create_model("ride_resnet32_3e.cifar10_lt_if100")
    assert model.num_classes == 10 and model.pretrained_cfg["input_size"] == (3, 32, 32)
    # a variant's default tag: its published weights' (ride_resnet32_3e: CIFAR-10-LT), else the first cfg
    # (CIFAR-100-LT for the CIFAR variants); the zoo publishes more of them over time, so ask the list
    assert timm.create_model("ride_resnet32_3e").num_classes == 10
    for name in sorted(n for n in RIDE_NAMES if n.startswith("ride_resnet32_")):
        assert timm.create_model(name).num_classes == (10 if _has_published_tag(name) else 100), name


def test_unknown_model_is_clear():
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model("ride_resnet33_3e")


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_num_experts(bad):
    with pytest.raises(UserInputError, match="num_experts"):
        timm.create_model("ride_resnet32_3e", num_experts=bad)
    with pytest.raises(UserInputError, match="num_experts"):
        timm.create_model("nclpp_resnet32", num_experts=bad)


def test_pretrained_without_published_weights_is_clear():
    with pytest.raises(UserInputError, match="no trained weights are published for ride_resnet32_3e.cifar100_lt_if100"):
        timm.create_model("ride_resnet32_3e.cifar100_lt_if100", pretrained=True)
    # a variant without any weights: tests/test_hub.py::test_pretrained_without_published_weights_raises_clear_error


@pytest.mark.parametrize("model_name", ["ride_resnet32_3e", "nclpp_resnet32"])
@pytest.mark.parametrize("num_experts", [0, -1, 1.5, True])
def test_num_experts_is_checked_once_in_the_model(model_name, num_experts):
    with pytest.raises(UserInputError, match=r"^num_experts must be an integer >= 1"):
        timm.create_model(model_name, num_experts=num_experts)

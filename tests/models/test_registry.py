"""Every variant is registered with timm, with cfgs pointing at our Hub organisation."""
import pytest
import timm

import timm_longtail  # noqa: F401
from timm_longtail.errors import UserInputError
from timm_longtail.models._cfgs import HF_ORG

RIDE_NAMES = {f"ride_{arch}_{n}e" for arch in ("resnet32", "resnet50", "resnext50_32x4d", "resnet152") for n in (2, 3, 4, 6)}
NCLPP_NAMES = {"nclpp_resnet32", "nclpp_resnet50", "nclpp_resnext50", "nclpp_resnext50_32x4d", "nclpp_resnet152"}


def test_all_variants_listed():
    assert set(timm.list_models("ride_*")) == RIDE_NAMES
    assert set(timm.list_models("nclpp_*")) == NCLPP_NAMES


@pytest.mark.parametrize("name", sorted(RIDE_NAMES | NCLPP_NAMES))
def test_cfgs_point_at_hub_org(name):
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.hf_hub_id.startswith(f"{HF_ORG}/")
    assert cfg.hf_hub_id.split("/", 1)[1].split(".")[0] in (name, "nclpp_resnext50_32x4d")
    assert len(cfg.input_size) == 3 and cfg.mean and cfg.std and cfg.num_classes > 0
    assert len(timm.list_pretrained(f"{name}.*")) >= 1


def test_alias_shares_structure_and_weights_repo():
    alias, canonical = timm.create_model("nclpp_resnext50"), timm.create_model("nclpp_resnext50_32x4d")
    assert sum(p.numel() for p in alias.parameters()) == sum(p.numel() for p in canonical.parameters())
    assert alias.pretrained_cfg["hf_hub_id"] == canonical.pretrained_cfg["hf_hub_id"]


def test_dataset_tag_sets_defaults():
    model = timm.create_model("ride_resnet32_3e.cifar10_lt_if100")
    assert model.num_classes == 10 and model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert timm.create_model("ride_resnet32_3e").num_classes == 100


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
        timm.create_model("ride_resnet32_3e", pretrained=True)

"""The reference layouts of the networks too big to commit as checkpoints (ResNet-50, ResNeXt-50,
ResNet-152): the key-and-shape lists their own code produces (tests/convert/fixtures/*.keys.json)
map one to one onto our models, every model tensor filled; wrong mappings are errors."""
import json
from pathlib import Path

import pytest
import timm_longtail  # noqa: F401
import timm
import torch

from timm_longtail.convert import detect_layout, map_state_dict
from timm_longtail.errors import UserInputError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEY_LISTS = sorted(p.name for p in FIXTURES.glob("*.keys.json"))
EXPECTED = {
    "ride_resnext50_4e_ea_imagenet_lt.keys.json": ("ride_resnext50_32x4d_4e", 1000, True),
    "ride_resnet50_3e_ea_inat2018.keys.json": ("ride_resnet50_3e", 8142, True),
    "ride_resnet50_6e_stage1_inat2018.keys.json": ("ride_resnet50_6e", 8142, False),
    "ride_resnet152_2e_stage1_imagenet_lt.keys.json": ("ride_resnet152_2e", 1000, False),
    "ncl_resnet50_3e_imagenet_lt.keys.json": ("nclpp_resnet50", 1000, False),
    "ncl_resnet152_3e_places_lt.keys.json": ("nclpp_resnet152", 365, False),
}


def _meta_state_dict(name: str) -> dict:
    """The reference network's state dict as the key list gives it: tensors of the right shapes on
    the meta device (no memory)."""
    keys = json.loads((FIXTURES / name).read_text())["keys"]
    return {key: torch.empty(shape, device="meta") for key, shape in keys}


def test_every_key_list_is_checked():
    assert set(KEY_LISTS) == set(EXPECTED)


@pytest.mark.parametrize("name", KEY_LISTS)
def test_every_reference_key_maps_to_one_model_key_of_its_shape(name):
    model_name, classes, router = EXPECTED[name]
    state_dict = _meta_state_dict(name)
    layout = detect_layout(state_dict)
    assert (layout.model_name(), layout.num_classes, layout.router) == (model_name, classes, router)
    with torch.device("meta"):
        model = timm.create_model(layout.model_name(), **layout.model_kwargs())
    model_state = model.state_dict()
    mapped = map_state_dict(state_dict, model_state, layout)
    assert set(mapped) == set(model_state)  # nothing unfilled, nothing extra
    assert all(tuple(mapped[k].shape) == tuple(model_state[k].shape) for k in mapped)
    added = {"router.trained"} if router else {k for k in model_state if k.startswith("router.")}
    assert len(state_dict) + len(added & set(model_state)) == len(mapped)  # each reference key landed once


def test_a_key_with_no_place_is_an_error():
    state_dict = _meta_state_dict("ride_resnet50_3e_ea_inat2018.keys.json")
    state_dict["module.backbone.extra_head.weight"] = torch.empty(3, device="meta")
    with pytest.raises(UserInputError, match="extra_head"):
        with torch.device("meta"):
            model = timm.create_model("ride_resnet50_3e", num_classes=8142, router_top_k=50)
        map_state_dict(state_dict, model.state_dict())


def test_a_missing_tensor_is_an_error_not_a_partial_load():
    state_dict = _meta_state_dict("ride_resnext50_4e_ea_imagenet_lt.keys.json")
    dropped = next(k for k in state_dict if "layer3s.2." in k)
    del state_dict[dropped]
    layout = detect_layout(state_dict)
    with torch.device("meta"):
        model = timm.create_model(layout.model_name(), **layout.model_kwargs())
    with pytest.raises(UserInputError, match="unfilled"):
        map_state_dict(state_dict, model.state_dict(), layout)


def test_two_keys_for_one_place_are_an_error():
    state_dict = _meta_state_dict("ride_resnet50_3e_ea_inat2018.keys.json")
    state_dict["layer1.0.conv1.weight"] = state_dict["backbone.layer1.0.conv1.weight"]  # both are trunk.layer1.0.conv1
    layout = detect_layout(_meta_state_dict("ride_resnet50_3e_ea_inat2018.keys.json"))
    with torch.device("meta"):
        model = timm.create_model(layout.model_name(), **layout.model_kwargs())
    with pytest.raises(UserInputError, match="both map to 'trunk.layer1.0.conv1.weight'"):
        map_state_dict(state_dict, model.state_dict(), layout)


def test_a_shape_that_differs_is_an_error():
    state_dict = _meta_state_dict("ride_resnet50_3e_ea_inat2018.keys.json")
    with torch.device("meta"):
        model = timm.create_model("ride_resnet50_3e", num_classes=1000)  # the file has 8142 classes
    with pytest.raises(UserInputError, match="does not fit"):
        map_state_dict(state_dict, model.state_dict())

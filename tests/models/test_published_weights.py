"""The published-weights table (``timm_longtail/models/published_weights.json``) and what follows from it:
which cfgs have weights, ``list_pretrained``, default tags, and the error for an unpublished tag.

The cfgs are registered with timm at import, so the table's effect on them is checked in a fresh
process whose table is ``$TIMM_LONGTAIL_PUBLISHED_WEIGHTS``, as a user's would be.
"""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import textwrap

import pytest
import timm
from torch.utils.data import Subset

from conftest import REPO_ROOT, load_script
import timm_longtail  # noqa: F401
from timm_longtail.data import create_loader
from timm_longtail.data.splits import dataset_targets
from timm_longtail.errors import UserInputError
from timm_longtail.evaluation import evaluate_mode
from timm_longtail.evaluation.setup import prepare_evaluation
from timm_longtail.models import weights as published
from timm_longtail.models.weights import (
    PUBLISHED_WEIGHTS_ENV, PUBLISHED_WEIGHTS_FILE, load_published_weights, record_published,
)

SHA_A, SHA_B = "a" * 64, "b" * 64


def test_packaged_table_is_valid_and_shipped_as_package_data():
    assert PUBLISHED_WEIGHTS_FILE == REPO_ROOT / "timm_longtail" / "models" / "published_weights.json"
    table = load_published_weights(PUBLISHED_WEIGHTS_FILE)
    assert table == json.loads(PUBLISHED_WEIGHTS_FILE.read_text())
    for key, entry in table.items():
        assert set(entry) == {"sha256", "size", "commit"}, key
        assert timm.models.get_pretrained_cfg(key).has_weights, key
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    globs = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["timm_longtail"]
    assert any(fnmatch.fnmatch("models/published_weights.json", pattern) for pattern in globs)


def test_record_published_adds_and_updates_one_entry_atomically(tmp_path):
    table = tmp_path / "published_weights.json"
    before = dict(published.PUBLISHED_WEIGHTS)
    entry = record_published("ride_resnet32_3e.cifar10_lt_if100", SHA_A, 1234, "ABCDEF1", table=table)
    assert entry == {"sha256": SHA_A, "size": 1234, "commit": "abcdef1"}
    record_published("nclpp_resnet32.cifar10_lt_if50", SHA_B.upper(), 99, "0123456789abcdef0123456789abcdef01234567",
                     table=table)
    record_published("ride_resnet32_3e.cifar10_lt_if100", SHA_B, 4321, "abcdef2", table=table)  # update
    text = table.read_text()
    assert text.endswith("}\n") and list(json.loads(text)) == sorted(json.loads(text))
    assert load_published_weights(table) == {
        "nclpp_resnet32.cifar10_lt_if50": {"sha256": SHA_B, "size": 99,
                                           "commit": "0123456789abcdef0123456789abcdef01234567"},
        "ride_resnet32_3e.cifar10_lt_if100": {"sha256": SHA_B, "size": 4321, "commit": "abcdef2"},
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published_weights.json"]  # no temporary file left
    assert published.PUBLISHED_WEIGHTS == before  # another table file: the one in use is untouched

    for args, message in (
            (("ride_resnet32_3e", SHA_A, 1, "abcdef1"), "not a '<model>.<tag>' name"),
            (("ride_resnet32_3e.places_lt", SHA_A, 1, "abcdef1"), "not a registered"),
            (("resnet50.a1_in1k", SHA_A, 1, "abcdef1"), "not a registered"),
            (("nclpp_resnext50.imagenet_lt", SHA_A, 1, "abcdef1"), "nclpp_resnext50_32x4d.imagenet_lt"),
            (("ride_resnet32_3e.cifar10_lt_if100", "abc", 1, "abcdef1"), "64 lower-case hex"),
            (("ride_resnet32_3e.cifar10_lt_if100", SHA_A, 0, "abcdef1"), "positive number of bytes"),
            (("ride_resnet32_3e.cifar10_lt_if100", SHA_A, 1, "0.1.0+gabcdef1"), "git commit"),
            (("ride_resnet32_3e.cifar10_lt_if100", SHA_A, 1, ""), "commit it was trained from"),
    ):
        with pytest.raises(UserInputError, match=message):
            record_published(*args, table=table)
    assert len(load_published_weights(table)) == 2


def test_bad_table_file_is_one_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "table.json"
    bad.write_text('{"ride_resnet32_3e.cifar10_lt_if100": {"sha256": "xyz"}}')
    with pytest.raises(UserInputError, match=r"table\.json: the 'sha256' of ride_resnet32_3e\.cifar10_lt_if100"):
        load_published_weights(bad)
    bad.write_text("[1, 2")
    with pytest.raises(UserInputError, match="not valid JSON"):
        load_published_weights(bad)
    monkeypatch.setenv(PUBLISHED_WEIGHTS_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(UserInputError, match="does not exist"):
        load_published_weights()


def test_unpublished_tag_keeps_its_cfg_and_refuses_pretrained(monkeypatch):
    monkeypatch.setattr(published, "PUBLISHED_WEIGHTS", {})
    model = timm.create_model("ride_resnet50_2e.inat2018")
    assert model.num_classes == 8142 and model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert model.pretrained_cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN
    with pytest.raises(UserInputError) as raised:
        timm.create_model("ride_resnet50_2e.inat2018", pretrained=True)
    assert str(raised.value).startswith("no trained weights are published for ride_resnet50_2e.inat2018 yet")
    with pytest.raises(UserInputError, match=r"no trained weights are published for nclpp_resnext50\.imagenet_lt"):
        timm.create_model("nclpp_resnext50", pretrained=True)


# Prints what the registry says under the table in $TIMM_LONGTAIL_PUBLISHED_WEIGHTS.
REGISTRY_PROBE = textwrap.dedent('''
    import json
    import timm_longtail, timm
    from timm_longtail.errors import UserInputError

    def error(name):
        try:
            timm.create_model(name, pretrained=True)
        except UserInputError as raised:
            return str(raised)

    cfg = timm.models.get_pretrained_cfg
    print(json.dumps(dict(
        list_pretrained=timm.list_pretrained(["ride_*", "nclpp_*"]),
        list_models=[m for m in timm.list_models(pretrained=True) if m.startswith(("ride_", "nclpp_"))],
        default_tag=cfg("ride_resnet32_3e").tag, default_hub_id=cfg("ride_resnet32_3e").hf_hub_id,
        other_default_tag=cfg("ride_resnet32_2e").tag,
        alias_hub_id=cfg("nclpp_resnext50.imagenet_lt").hf_hub_id,
        unpublished_has_weights=bool(cfg("ride_resnet32_3e.cifar100_lt_if100").has_weights),
        unpublished_classes=cfg("ride_resnet32_3e.cifar100_lt_if100").num_classes,
        unpublished_error=error("ride_resnet32_3e.cifar100_lt_if100"),
    )))
''')


@pytest.mark.slow
def test_registry_follows_the_table(tmp_path):
    table = tmp_path / "published_weights.json"
    record_published("ride_resnet32_3e.cifar10_lt_if100", SHA_A, 10, "abcdef1", table=table)
    record_published("nclpp_resnext50_32x4d.imagenet_lt", SHA_B, 10, "abcdef1", table=table)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT), **{PUBLISHED_WEIGHTS_ENV: str(table)})
    done = subprocess.run([sys.executable, "-c", REGISTRY_PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    published = ["nclpp_resnext50.imagenet_lt", "nclpp_resnext50_32x4d.imagenet_lt",
                 "ride_resnet32_3e.cifar10_lt_if100"]  # the alias shares its canonical model's weights
    assert seen["list_pretrained"] == published and seen["list_models"] == published
    # the default tag of a variant with weights is a tag with weights (cifar100_lt_if100 comes first otherwise)
    assert seen["default_tag"] == "cifar10_lt_if100"
    assert seen["default_hub_id"] == "timm-longtail/ride_resnet32_3e.cifar10_lt_if100"
    assert seen["other_default_tag"] == "cifar100_lt_if100"
    assert seen["alias_hub_id"] == "timm-longtail/nclpp_resnext50_32x4d.imagenet_lt"
    assert seen["unpublished_has_weights"] is False and seen["unpublished_classes"] == 100
    assert seen["unpublished_error"].startswith(
        "no trained weights are published for ride_resnet32_3e.cifar100_lt_if100 yet")


# Loads every shipped published weight with pretrained=True (its default tag too) and compares it with the file.
SHIPPED_PROBE = textwrap.dedent('''
    import json, sys
    import timm_longtail, timm, torch
    from safetensors.torch import load_file

    for key, path in json.loads(sys.argv[1]).items():
        expected = load_file(path)
        model_name = key.split(".")[0]
        default = f"{model_name}.{timm.models.get_pretrained_cfg(model_name).tag}"
        for name in (key, model_name) if default == key else (key,):
            model = timm.create_model(name, pretrained=True)
            state = model.state_dict()
            assert state.keys() == expected.keys(), name
            assert all(torch.equal(state[k], expected[k]) for k in state), name
            print(name, model.pretrained_cfg["tag"])
''')


@pytest.mark.slow
def test_shipped_weights_load_offline_with_pretrained_true(tmp_path):
    """Each table entry of a ResNet-32 is committed beside its card with the table's SHA-256, and
    ``pretrained=True`` (by full name, and by model name: its default tag) loads exactly that file
    with the network off and an empty Hub cache."""
    from timm_longtail.files import sha256_of_file

    table = load_published_weights(PUBLISHED_WEIGHTS_FILE)
    files = {}
    for key, record in table.items():
        path = REPO_ROOT / "hub_cards" / key / "model.safetensors"
        if "resnet32" in key:
            assert path.is_file(), f"{key} is published but its weights are not committed"
        if path.is_file():
            assert sha256_of_file(path) == record["sha256"], key
            files[key] = str(path)
    if not files:
        pytest.skip("no weights are committed yet")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", SHIPPED_PROBE, json.dumps(files)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = dict(line.split() for line in done.stdout.splitlines())
    assert files.keys() <= loaded.keys()
    # every model with weights defaults to a tag with weights
    assert {key.split(".")[0] for key in files} <= loaded.keys()


@pytest.mark.slow
def test_shipped_weights_reproduce_their_cards_on_the_rarest_class(shared_data):
    """The committed weights, loaded with ``pretrained=True`` and evaluated with validate.py's own code,
    give the accuracy their ``results.json`` records on the rarest class, in every forward mode the
    card reports (its 1,000 test images: a few seconds per mode, where the whole test set would take
    minutes). One image of slack per mode: another CPU may sum a near-tie in another order."""
    validate = load_script(REPO_ROOT / "validate.py", "validate_for_published")
    table = load_published_weights(PUBLISHED_WEIGHTS_FILE)
    checked = []
    for key in table:
        folder = REPO_ROOT / "hub_cards" / key
        if not (folder / "model.safetensors").is_file():
            continue
        results = json.loads((folder / "results.json").read_text())
        recorded_dataset = results["dataset"]
        assert recorded_dataset["name"] == "cifar10_lt", f"{key}: this check knows CIFAR-10's test set only"
        args = validate.build_parser().parse_args([
            "--model", key, "--pretrained", "--dataset", "cifar10_lt", "--data-dir", str(shared_data / "cifar10"),
            "--imbalance-factor", str(recorded_dataset["imbalance_factor"]), "--split", "test", "--workers", "0",
            "--device", "cpu"])
        setup = prepare_evaluation(args)
        rarest = min(range(len(setup.class_counts)), key=setup.class_counts.__getitem__)
        rows = [i for i, target in enumerate(dataset_targets(setup.dataset)) if target == rarest]
        loader = create_loader(Subset(setup.dataset, rows), batch_size=256, shuffle=False, num_workers=0)
        for mode, recorded in results["modes"].items():
            measured = evaluate_mode(setup.model, loader, mode, class_counts=setup.class_counts)
            assert measured["num_samples"] == len(rows) == 1000
            difference = abs(measured["per_class_accuracy"][rarest] - recorded["per_class_accuracy"][rarest])
            assert difference <= 100.0 / len(rows) + 1e-9, (key, mode, measured["per_class_accuracy"][rarest],
                                                             recorded["per_class_accuracy"][rarest])
            checked.append((key, mode))
    if not checked:
        pytest.skip("no weights are committed yet")

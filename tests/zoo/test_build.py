"""The zoo build end to end on the shipped demo folder (CIFAR-10-LT drawn from its images, and the demo set):
builds, publishes, skips, resumes exactly."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO_ROOT, write_row_subset
from timm_longtail.errors import UserInputError
from timm_longtail.files import sha256_of_file
from timm_longtail._paths import _ABSOLUTE
from timm_longtail.zoo import BuildSettings, load_manifest
from timm_longtail.zoo.manifest import DEFAULT_MANIFEST

ENTRY = "ride_resnet32_3e.cifar10_lt_if100"
FAST = ["--max-eval-samples", "100", "--eval-batch-size", "100", "--workers", "0", "--log-interval", "1"]
# Weights published as cifar10_lt_if100 must be trained on CIFAR-10-LT (IF 100): here a draw from the CIFAR-10
# images of the demo folder (small and shipped), not the demo set itself, whose export under that tag is refused.
DEMO_FOLDER = "timm_longtail/data/demo"
ON_CIFAR10_LT = ["--dataset", "cifar10_lt", "--imbalance-factor", "100"]


def _originals(tmp_path: Path) -> Path:
    """A stand-in for the demo set's lossless originals: its first 100 test images upside down."""
    from timm_longtail.data import build_dataset

    test = build_dataset("demo", split="test")
    return write_row_subset(tmp_path / "demo-originals", test.images[:100, ::-1].copy(), test.targets[:100],
                            test.class_names)


def _manifest(tmp_path: Path, experts_steps: int = 3) -> Path:
    """RIDE 3 experts on CIFAR-10-LT drawn from the demo folder: a 3-epoch experts stage, then a 1-epoch router
    stage; measured on :func:`_originals` as the shared CIFAR-10's weights are on its lossless test head."""
    experts_args = ["--epochs", "3", "--drw-epoch", "2", "--decay-milestones", "3", "--warmup-epochs", "0",
                    "--max-steps-per-epoch", str(experts_steps), *ON_CIFAR10_LT, *FAST]
    router_args = ["--epochs", "1", "--max-steps-per-epoch", "2", *ON_CIFAR10_LT, *FAST]
    manifest = dict(data_dirs=dict(cifar10_lt=DEMO_FOLDER, cifar10_lt_originals=str(_originals(tmp_path))),
                    lossless_subsets=dict(cifar10_lt="cifar10_lt_originals"), entries=[dict(
        name=ENTRY, dataset="cifar10_lt",
        stages=[dict(name="experts", config="configs/demo_ride.yaml", args=experts_args),
                dict(name="router", config="configs/demo_ride_router.yaml", init_from="experts", args=router_args)],
    )])
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return path


def _zoo(*args: str, processes=None, **kwargs) -> subprocess.Popen:
    """``python -m timm_longtail.zoo``; started through ``processes`` (the fixture) when the test signals it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    start = subprocess.Popen if processes is None else processes.start
    return start([sys.executable, "-m", "timm_longtail.zoo", *args], cwd=REPO_ROOT, env=env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _build(manifest: Path, runs: Path, publish: Path, processes=None) -> subprocess.Popen:
    return _zoo("build", "--manifest", str(manifest), "--runs-dir", str(runs), "--publish-to", str(publish),
                "--allow-dirty", processes=processes)


def _interrupted_build(manifest: Path, runs: Path, pub: Path, processes) -> None:
    """Start a build and stop it with SIGTERM once the experts stage has written a checkpoint."""
    proc = _build(manifest, runs, pub, processes)
    checkpoint = runs / ENTRY / "experts" / "last.pth"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, out + err
    assert "stopped by a signal" in out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One uninterrupted build; returns (tmp, runs, publish, stdout)."""
    tmp = tmp_path_factory.mktemp("zoo")
    manifest = _manifest(tmp)
    proc = _build(manifest, tmp / "runs", tmp / "pub")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    return tmp, manifest, tmp / "runs", tmp / "pub", out


@pytest.mark.slow
def test_build_publishes_weights_card_results_and_table(built):
    tmp, _, runs, pub, out = built
    folder = pub / "hub_cards" / ENTRY
    assert {p.name for p in folder.iterdir()} == {"README.md", "config.json", "model.safetensors", "results.json",
                                                  "weights.json", "analysis"}
    # the card's analyses, measured on the test split with the published weights, and shown in the card
    assert {p.name for p in (folder / "analysis").iterdir()} == {"analysis.json", "hardest_negative.png",
                                                                 "calibration.png"}
    assert json.loads((folder / "analysis" / "analysis.json").read_text())["modes"] == ["ensemble", "routed"]
    assert "### Hardest negatives and calibration" in (folder / "README.md").read_text()
    table = json.loads((pub / "timm_longtail" / "models" / "published_weights.json").read_text())
    weights = json.loads((folder / "weights.json").read_text())

    assert table[ENTRY]["sha256"] == weights["sha256"] == sha256_of_file(folder / "model.safetensors")
    results = json.loads((folder / "results.json").read_text())
    assert set(results["modes"]) == {"ensemble", "expert:0", "expert:1", "expert:2", "routed"}
    # the weights measured on the originals of the first 100 test rows and on the same rows, every mode
    lossless = results["lossless_subset"]
    assert lossless["weights_sha256"] == sha256_of_file(folder / "model.safetensors")
    assert list(lossless["result"]) == ["ensemble", "expert:0", "expert:1", "expert:2", "routed"]
    assert lossless["num_samples"] == 100 and lossless["lossless_dir"] == "demo-originals"
    assert "### On the original images" in (folder / "README.md").read_text()
    assert f"on the original images {lossless['result']['ensemble']['top1_lossless']:.2f}" in out
    assert [s["stage"] for s in results["zoo"]["stages"]] == ["experts", "router"]
    assert results["zoo"]["stages"][0]["epochs"] == 3 and results["zoo"]["stages"][1]["epochs"] == 1
    # no machine paths in what gets published
    for name in ("results.json", "README.md", "weights.json", "config.json", "analysis/analysis.json"):
        text = (folder / name).read_text()
        assert str(tmp) not in text and str(REPO_ROOT) not in text and not _ABSOLUTE.search(text), name
    assert weights["commits"] and all(len(c) == 40 for c in weights["commits"])
    # each stage recorded the commit it trained from
    record = json.loads((runs / ENTRY / "experts" / "zoo.json").read_text())
    assert len(record["segments"]) == 1 and record["segments"][0]["returncode"] == 0
    # and the machine it ran on (speeds and float rounding depend on it), carried into the results
    machine = record["segments"][0]["machine"]
    assert machine["cpu_count"] == os.cpu_count() and machine["torch"] == torch.__version__
    assert results["zoo"]["stages"][0]["machines"] == [machine]
    summary = json.loads((runs / "zoo_build.json").read_text())
    assert summary["entries"][0]["status"] == "published"


@pytest.mark.slow
def test_second_build_skips_the_published_entry(built):
    _, manifest, runs, pub, _ = built
    before = (pub / "hub_cards" / ENTRY / "model.safetensors").stat().st_mtime_ns
    started = time.time()
    proc = _build(manifest, runs, pub)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "published already, skipped" in out
    assert (pub / "hub_cards" / ENTRY / "model.safetensors").stat().st_mtime_ns == before
    assert time.time() - started < 60


@pytest.mark.slow
def test_interrupted_build_resumes_to_the_same_weights(built, tmp_path, processes):
    _, manifest, _, reference_pub, _ = built
    runs, pub = tmp_path / "runs", tmp_path / "pub"
    # more steps per epoch than a signal needs to land mid-stage; same weights as the uninterrupted build
    _interrupted_build(manifest, runs, pub, processes)
    assert not (pub / "hub_cards" / ENTRY).exists()
    statuses = [p.name for p in (runs / ENTRY).iterdir() if (p / "final.json").exists()]
    assert "router" not in statuses  # the build stopped before finishing

    proc = _build(manifest, runs, pub)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "resuming" in out
    resumed = load_file(pub / "hub_cards" / ENTRY / "model.safetensors")
    reference = load_file(reference_pub / "hub_cards" / ENTRY / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert (resumed[key] == reference[key]).all(), key
    record = json.loads((runs / ENTRY / "experts" / "zoo.json").read_text())
    assert [s["resumed"] for s in record["segments"]][:2] == [False, True]


@pytest.mark.slow
def test_a_parked_stage_resumes_without_its_runs_folder(built, tmp_path, processes):
    import shutil

    _, manifest, _, reference_pub, _ = built
    runs, pub = tmp_path / "runs", tmp_path / "pub"
    _interrupted_build(manifest, runs, pub, processes)
    common = ["--manifest", str(manifest), "--publish-to", str(pub)]
    proc = _zoo("status", *common, "--runs-dir", str(runs))  # the run is in the runs folder only, and says so
    out, err = proc.communicate(timeout=120)
    assert re.search(r"experts:partial\(\d+/3 ep, not parked\) router:new$", out.strip()), out + err
    proc = _zoo("park", *common, "--runs-dir", str(runs))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    proc = _zoo("status", *common, "--runs-dir", str(runs))
    out, err = proc.communicate(timeout=120)
    assert re.search(r"experts:partial\(\d+/3 ep, parked\) router:new$", out.strip()), out + err
    parked = pub / "zoo_parked" / ENTRY / "experts"
    info = json.loads((parked / "parked.json").read_text())
    assert info["status"] == "partial" and len(info["sha256"]) == 64
    assert {p.name for p in parked.iterdir()} >= {"last.pth", "zoo.json", "parked.json"}
    assert not (pub / "zoo_parked" / ENTRY / "router").exists()  # never started: nothing to park

    gone = tmp_path / "fresh-runs"  # the runs folder is lost (a new machine): the build resumes the parked copy
    proc = _zoo("status", *common, "--runs-dir", str(gone), "--json")
    out, err = proc.communicate(timeout=120)
    state = json.loads(out)[0]
    assert state["stages"] == {"experts": "parked", "router": "new"}, err
    assert state["epochs"] == {"experts": [info["epoch"], 3], "router": None}  # how far the parked stage got
    assert state["parked_epochs"] == {"experts": info["epoch"], "router": None}

    tampered = tmp_path / "tampered"
    shutil.copytree(pub, tampered)
    with open(tampered / "zoo_parked" / ENTRY / "experts" / "last.pth", "ab") as handle:
        handle.write(b"x")
    proc = _build(manifest, tmp_path / "other-runs", tampered)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "does not match the SHA-256" in err and "Traceback" not in err

    proc = _build(manifest, gone, pub)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "restored the parked checkpoint" in out and "resuming" in out
    resumed = load_file(pub / "hub_cards" / ENTRY / "model.safetensors")
    reference = load_file(reference_pub / "hub_cards" / ENTRY / "model.safetensors")
    for key in reference:
        assert (resumed[key] == reference[key]).all(), key
    assert not (pub / "zoo_parked").exists()  # publishing removed the parked checkpoints
    record = json.loads((gone / ENTRY / "experts" / "zoo.json").read_text())
    assert [s["resumed"] for s in record["segments"]] == [False, True]  # the parked segments carried over


@pytest.mark.slow
def test_publish_again_from_the_runs_gives_the_same_weights(built, tmp_path):
    import fcntl

    _, manifest, runs, pub, _ = built
    again = tmp_path / "pub"
    with open(runs / ".zoo.lock", "a+") as handle:  # a build training other entries does not block it
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = _zoo("publish", "--manifest", str(manifest), "--runs-dir", str(runs), "--publish-to", str(again))
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    first, second = (json.loads((p / "hub_cards" / ENTRY / "weights.json").read_text()) for p in (pub, again))
    assert second["sha256"] == first["sha256"]
    results = json.loads((again / "hub_cards" / ENTRY / "results.json").read_text())
    assert all("--resume" not in (stage["command"] or "") for stage in results["zoo"]["stages"])
    # the checkout's own files as a user runs them from its root, not ./ or the build's worktree path
    assert [stage["command"].split()[:3] for stage in results["zoo"]["stages"]] == [
        ["train.py", "-c", "configs/demo_ride.yaml"], ["train.py", "-c", "configs/demo_ride_router.yaml"]]

    # the runs are gone (a new machine): publishing again renders the card from the committed folder alone
    card = again / "hub_cards" / ENTRY / "README.md"
    exported = card.read_text()
    card.write_text("stale")
    proc = _zoo("publish", "--manifest", str(manifest), "--runs-dir", str(tmp_path / "gone"), "--publish-to",
                str(again))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "card rendered again from the published folder" in out, out + err
    assert card.read_text() == exported
    assert json.loads((again / "hub_cards" / ENTRY / "weights.json").read_text())["sha256"] == first["sha256"]

    # results without the lossless-subset figures (published before they existed): measured from the
    # committed weights, the same numbers as at the build; the weights are not rewritten
    results_path = again / "hub_cards" / ENTRY / "results.json"
    measured = json.loads(results_path.read_text())
    weights = (again / "hub_cards" / ENTRY / "model.safetensors").read_bytes()
    results_path.write_text(json.dumps({k: v for k, v in measured.items() if k != "lossless_subset"}))
    card.write_text("stale")
    proc = _zoo("publish", "--manifest", str(manifest), "--runs-dir", str(tmp_path / "gone"), "--publish-to",
                str(again))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "measured its weights; on the original images" in out, out + err
    assert json.loads(results_path.read_text()) == measured and card.read_text() == exported
    assert (again / "hub_cards" / ENTRY / "model.safetensors").read_bytes() == weights
    # where the originals are missing, the card is rendered without them and the output says so
    moved = yaml.safe_load(manifest.read_text())
    moved["data_dirs"]["cifar10_lt_originals"] = str(tmp_path / "nowhere")
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump(moved))
    results_path.write_text(json.dumps({k: v for k, v in measured.items() if k != "lossless_subset"}))
    proc = _zoo("publish", "--manifest", str(elsewhere), "--runs-dir", str(tmp_path / "gone"), "--publish-to",
                str(again))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "not measured on the original images" in out and "nowhere not found" in out, \
        out + err
    assert "### On the original images" not in card.read_text()


@pytest.mark.slow
def test_recipe_changing_train_args_train_but_do_not_publish(built, tmp_path):
    _, manifest, _, _, _ = built
    runs, pub = tmp_path / "runs", tmp_path / "pub"
    common = ["--manifest", str(manifest), "--runs-dir", str(runs), "--publish-to", str(pub)]
    proc = _zoo("build", *common, "--allow-dirty", "--train-arg=--max-steps-per-epoch=1")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "another recipe than the manifest's" in out and "max_steps_per_epoch" in out
    assert not (pub / "hub_cards" / ENTRY).exists()
    assert json.loads((runs / "zoo_build.json").read_text())["entries"][0]["status"] == "unpublished"
    record = json.loads((runs / ENTRY / "experts" / "zoo.json").read_text())
    assert record["segments"][0]["extra_args"] == ["--max-steps-per-epoch=1"]
    proc = _zoo("publish", *common)  # publishing the trial runs later is refused too
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "another recipe" in out and not (pub / "hub_cards" / ENTRY).exists()
    proc = _zoo("park", *common)  # nor is a trial parked for a later build to resume
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and err.startswith("error: ") and "not parked" in err and "Traceback" not in err
    assert not (pub / "zoo_parked").exists()


@pytest.mark.slow
def test_a_student_falls_back_to_the_published_teacher_weights(built, tmp_path):
    import shutil

    from timm_longtail.checkpoint import build_model_from_checkpoint
    from timm_longtail.zoo.stages import teacher_checkpoint

    _, manifest_path, runs, pub, _ = built
    manifest = load_manifest(manifest_path)
    teacher = manifest.entry(ENTRY)
    trained = teacher_checkpoint(manifest, BuildSettings(runs_dir=runs, publish_to=pub), teacher)
    assert trained == runs / ENTRY / "router" / "last.pth"
    # the runs folder is gone: the weights committed beside the card teach, when their SHA-256 is the table's
    published = teacher_checkpoint(manifest, BuildSettings(runs_dir=tmp_path / "gone", publish_to=pub), teacher)
    assert published == pub / "hub_cards" / ENTRY / "model.safetensors"
    model, _ = build_model_from_checkpoint(published)
    assert model.num_experts == 3 and model.num_classes == 10
    tampered = tmp_path / "tampered"
    shutil.copytree(pub, tampered)
    weights = tampered / "hub_cards" / ENTRY / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert teacher_checkpoint(manifest, BuildSettings(runs_dir=tmp_path / "gone", publish_to=tampered), teacher) is None


@pytest.mark.slow
def test_status_lists_every_entry(built):
    _, manifest, runs, pub, _ = built
    proc = _zoo("status", "--manifest", str(manifest), "--runs-dir", str(runs), "--publish-to", str(pub), "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    (state,) = json.loads(out)
    assert state["published"] and state["stages"] == {"experts": "done", "router": "done"}
    assert state["epochs"] == {"experts": [3, 3], "router": [1, 1]}


def test_the_shipped_manifest_is_valid():
    manifest = load_manifest(DEFAULT_MANIFEST)
    names = [e.name for e in manifest.entries]
    assert names[0] == ENTRY
    assert all(e.final_stage.name == "router" for e in manifest.entries if e.name.startswith("ride_"))
    nclpp = manifest.entry("nclpp_resnet32.cifar10_lt_if100")
    assert nclpp.device == "gpu"
    # the JPEG CIFAR-10's weights are measured on the originals of its test head too
    assert manifest.data_dir(manifest.lossless_subsets["cifar10"]).name == "cifar10-lossless-test-head"


def test_the_cropflip_entry_is_the_reference_recipe_without_rotation():
    """0b's variant: both stages as the RIDE 3e entry's, with crop + flip (``ldam_cifar``) for ``ride_cifar``."""
    manifest = load_manifest(DEFAULT_MANIFEST)
    reference, variant = manifest.entry(ENTRY), manifest.entry("ride_resnet32_3e.cropflip_cifar10_lt_if100")
    assert [s.name for s in variant.stages] == [s.name for s in reference.stages] == ["experts", "router"]
    for ours, theirs in zip(variant.stages, reference.stages):
        assert (ours.config, ours.init_from) == (theirs.config, theirs.init_from)
        assert list(ours.args) == [*theirs.args, "--train-transform", "ldam_cifar"]
        assert yaml.safe_load((REPO_ROOT / theirs.config).read_text())["train_transform"] == "ride_cifar"
    # measured (seed 0) below the reference recipe, so results only: weights were promised only if it beat it
    assert (variant.publish, reference.publish) == ("results", "weights")


@pytest.mark.parametrize("change, message", [
    (lambda m: m["entries"][0].update(name="no_tag"), "must be '<model>.<tag>'"),
    (lambda m: m["entries"][0]["stages"][1].update(init_from="later"), "not an earlier stage"),
    (lambda m: m["entries"][0]["stages"][0].update(config="configs/missing.yaml"), "not found"),
    (lambda m: m["entries"][0].update(dataset="cifar100"), "not in data_dirs"),
    (lambda m: m["entries"][0]["stages"][0].update(teacher="someone"), "must be another entry"),
    (lambda m: m.update(lossless_subsets=dict(demo="originals")), "lossless_subsets maps a dataset of data_dirs"),
])
def test_bad_manifests_are_one_clear_error(tmp_path, change, message):
    raw = yaml.safe_load(_manifest(tmp_path).read_text())
    change(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserInputError, match=message):
        load_manifest(path)


@pytest.mark.slow
def test_bad_manifest_on_the_command_line_is_one_error_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("entries: [1, 2")
    proc = _zoo("status", "--manifest", str(path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


@pytest.mark.slow
def test_tables_show_the_published_results(built):
    from timm_longtail.zoo.table import BEGIN, END, render_tables, replace_tables

    _, manifest_path, _, pub, _ = built
    manifest = load_manifest(manifest_path)
    results = json.loads((pub / "hub_cards" / ENTRY / "results.json").read_text())
    tables = render_tables(manifest, pub)
    (row,) = [line for line in tables.splitlines() if line.startswith("| `ride_resnet32_3e` |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "cifar10_lt_if100" and cells[2] == "experts 3 ep + router 1 ep"
    assert cells[3] == f"{results['modes']['ensemble']['top1']:.2f}"
    assert cells[5] == f"{results['modes']['routed']['top1']:.2f}"
    assert cells[7] == f"{results['modes']['routed']['macs_per_image'] / 1e9:.4f}"
    text = replace_tables(f"intro\n{BEGIN}\nold\n{END}\nrest\n", tables)
    assert text == f"intro\n{BEGIN}\n{tables}\n{END}\nrest\n"


def test_results_only_table_shows_routed_top1_where_there_is_one(tmp_path):
    """A results-only RIDE variant keeps its routed figure; a one-expert baseline shows none."""
    from timm_longtail.zoo.table import RESULTS_ONLY_HEADING, render_tables

    variant, baseline = "ride_resnet32_3e.cropflip_cifar10_lt_if100", "ce_resnet32.cifar10_lt_if100"
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(dict(data_dirs=dict(demo=None), entries=[
        dict(name=name, dataset="demo", publish="results", stages=[dict(name="train", config="configs/demo_ride.yaml")])
        for name in (variant, baseline)])))
    modes = {variant: dict(ensemble=dict(top1=76.35, top1_many=78.55, top1_medium=67.55), routed=dict(top1=76.1)),
             baseline: {"ensemble": dict(top1=64.17), "expert:0": dict(top1=64.17)}}
    for name, result in modes.items():
        target = tmp_path / "pub" / "results" / "zoo" / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(dict(modes=result, zoo=dict(stages=[dict(stage="train", epochs=200)]))))
    tables = render_tables(load_manifest(path), tmp_path / "pub").split(RESULTS_ONLY_HEADING)[1]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in tables.splitlines() if line.startswith("| `")}
    assert rows[f"`{variant}`"][1:5] == ["train 200 ep", "76.35", "76.10", "78.55 / 67.55 / -"]
    assert rows[f"`{baseline}`"][2:4] == ["64.17", "-"]


@pytest.mark.slow
def test_readme_zoo_tables_are_current():
    proc = _zoo("table", "--check")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err


def test_every_published_entry_is_a_registered_model_tag():
    import timm

    for entry in load_manifest(DEFAULT_MANIFEST).entries:
        if entry.publish == "weights":
            assert timm.models.get_pretrained_cfg(entry.name) is not None, entry.name


def _plain_train(runs: Path, stage_args, *extra: str) -> subprocess.CompletedProcess:
    """The experts stage run by plain train.py, as before the zoo build adopts it."""
    command = [sys.executable, "train.py", "-c", "configs/demo_ride.yaml", "--output", str(runs / ENTRY),
               "--experiment", "experts", "--device", "cpu", "--data-dir", DEMO_FOLDER, *stage_args, *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))


@pytest.mark.slow
def test_a_stage_begun_by_plain_train_py_is_adopted(tmp_path):
    manifest = _manifest(tmp_path)
    experts_args = yaml.safe_load(manifest.read_text())["entries"][0]["stages"][0]["args"]
    runs, pub = tmp_path / "runs", tmp_path / "pub"
    done = _plain_train(runs, experts_args)
    assert done.returncode == 0, done.stderr
    proc = _build(manifest, runs, pub)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "experts: starting" not in out and "experts: resuming" not in out  # not trained again
    results = json.loads((pub / "hub_cards" / ENTRY / "results.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    assert results["zoo"]["stages"][0]["commits"] == [head]


@pytest.mark.slow
def test_resuming_a_checkpoint_of_another_recipe_is_refused(tmp_path):
    manifest = _manifest(tmp_path)
    experts_args = yaml.safe_load(manifest.read_text())["entries"][0]["stages"][0]["args"]
    runs = tmp_path / "runs"
    done = _plain_train(runs, experts_args, "--lr", "0.05")
    assert done.returncode == 0, done.stderr
    (runs / ENTRY / "experts" / "final.json").unlink()  # as if stopped before the end: resumable
    proc = _build(manifest, runs, tmp_path / "pub")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, out + err
    assert err.count("\n") == 1 and err.startswith("error: ") and "lr: 0.05" in err
    assert not (tmp_path / "pub").exists()


@pytest.mark.slow
def test_runs_inside_the_checkout_are_refused(tmp_path):
    proc = _build(_manifest(tmp_path), REPO_ROOT / "zoo-runs-test", tmp_path / "pub")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "outside the work tree" in err
    assert not (REPO_ROOT / "zoo-runs-test").exists()


def test_published_means_results_and_a_matching_table_entry(tmp_path):
    from timm_longtail.zoo import is_published

    manifest = load_manifest(_manifest(tmp_path))
    entry = manifest.entry(ENTRY)
    settings = BuildSettings(runs_dir=tmp_path / "runs", publish_to=tmp_path / "pub")
    folder = settings.cards_dir / ENTRY
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{}")
    (folder / "weights.json").write_text(json.dumps({"sha256": "ab" * 32}))
    assert not is_published(settings, entry)  # a build killed before the table entry: build it again
    settings.published_table.parent.mkdir(parents=True)
    settings.published_table.write_text(json.dumps({ENTRY: {"sha256": "cd" * 32}}))
    assert not is_published(settings, entry)
    settings.published_table.write_text(json.dumps({ENTRY: {"sha256": "ab" * 32}}))
    assert is_published(settings, entry)


@pytest.mark.slow
def test_one_build_per_runs_folder(tmp_path):
    import fcntl

    runs = tmp_path / "runs"
    runs.mkdir()
    with open(runs / ".zoo.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = _build(_manifest(tmp_path), runs, tmp_path / "pub")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "another zoo build is using" in err and err.count("\n") == 1
    assert not (runs / ENTRY).exists()


@pytest.mark.slow
def test_data_dir_and_source_commit_refuse_bad_values_with_one_line(tmp_path):
    manifest = _manifest(tmp_path)
    common = ["build", "--manifest", str(manifest), "--runs-dir", str(tmp_path / "runs"), "--publish-to",
              str(tmp_path / "pub"), "--allow-dirty"]
    cases = [(["--data-dir", "demo"], "--data-dir takes DATASET=PATH"),
             (["--data-dir", f"cifar10={tmp_path}"],
              "the manifest has no dataset 'cifar10' (it has cifar10_lt, cifar10_lt_originals)"),
             (["--data-dir", f"cifar10_lt={tmp_path / 'nowhere'}"], "is not a folder"),
             (["--source-commit", "0" * 40], "is not this checkout's HEAD")]
    for extra, message in cases:
        proc = _zoo(*common, *extra)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, out + err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "pub").exists()


@pytest.mark.slow
def test_a_results_only_baseline_publishes_its_results_and_analyses(tmp_path):
    """A baseline publishes no weights: its results file and, measured from its final checkpoint before
    the runs are gone, the analyses a one-expert model has (hardest negatives, calibration, test-agnostic)."""
    from timm_longtail.zoo.publishing import BASELINE_ANALYSES

    name = "ce_resnet32.cifar10_lt_if100"
    args = ["--num-experts", "1", "--method", "ce", "--num-copies", "1", "--train-transform", "ldam_cifar",
            "--epochs", "1", "--warmup-epochs", "0", "--max-steps-per-epoch", "2", "--workers", "0"]
    manifest = tmp_path / "zoo.yaml"
    manifest.write_text(yaml.safe_dump(dict(data_dirs=dict(demo=None), entries=[dict(
        name=name, dataset="demo", publish="results",
        stages=[dict(name="train", config="configs/demo_nclpp.yaml", args=args)])])), encoding="utf-8")
    proc = _build(manifest, tmp_path / "runs", tmp_path / "pub")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    results = json.loads((tmp_path / "pub" / "results" / "zoo" / f"{name}.json").read_text())
    assert set(results["modes"]) == {"ensemble", "expert:0"}
    assert not (tmp_path / "pub" / "hub_cards" / name).exists()
    analysis_dir = tmp_path / "pub" / "results" / "analysis"
    for analysis in BASELINE_ANALYSES:
        stem = f"{name}.{analysis.replace('-', '_')}"
        assert {p.name[len(stem):] for p in analysis_dir.glob(stem + ".*")} == {".json", ".csv", ".png"}
        text = (analysis_dir / f"{stem}.json").read_text()
        payload = json.loads(text)
        assert payload["analysis"] == analysis and payload["forward_modes"] == ["ensemble"]
        assert payload["num_samples"] == results["modes"]["ensemble"]["num_samples"]
        assert str(tmp_path) not in text and not _ABSOLUTE.search(text)
    # the measured calibration agrees with the evaluation of the same checkpoint
    calibration = json.loads((analysis_dir / f"{name}.calibration.json").read_text())["result"]["ensemble"]
    assert calibration["splits"]["all"]["accuracy"] * 100 == pytest.approx(results["modes"]["ensemble"]["top1"],
                                                                           abs=0.01)

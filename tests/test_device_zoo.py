"""scripts/device_zoo.sh end to end on the CPU, as the GPU machine runs it: a copy of the tree without
git (the commit stated), the entries without weights built GPU-first, each handed back as an archive."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from timm_longtail.files import sha256_of_file
from conftest import REPO_ROOT

FAST = ["--max-eval-samples", "100", "--eval-batch-size", "100", "--log-interval", "1"]
WEIGHTS_ENTRY = "ride_resnet32_3e.cifar10_lt_if100"  # a registered tag (weights need one): trained on CIFAR-10-LT
ON_CIFAR10_LT = ["--dataset", "cifar10_lt", "--imbalance-factor", "100"]  # drawn from the demo folder's CIFAR-10 images
RESULTS_ENTRY = "ride_resnet32_2e.demo_workers"
GPU_ENTRY = "nclpp_resnet32.demo_gpu"
STATED = "0123456789abcdef0123456789abcdef01234567"


def _manifest(tmp_path: Path) -> Path:
    """A device: gpu RIDE entry with results only whose augmentation has no batched form (loader
    workers), a RIDE entry with weights and a device: gpu NCL++ two-copy entry (both batched
    augmentation on the device): the order must be the GPU-only batched entry, the other batched
    one, then the workers one."""
    short = ["--epochs", "1", "--max-steps-per-epoch", "2", "--warmup-epochs", "0", *FAST]
    manifest = dict(data_dirs=dict(demo=None, cifar10_lt="timm_longtail/data/demo"), entries=[
        dict(name=WEIGHTS_ENTRY, dataset="cifar10_lt", stages=[
            dict(name="experts", config="configs/demo_ride.yaml", args=[*short, "--drw-epoch", "0", *ON_CIFAR10_LT]),
            dict(name="router", config="configs/demo_ride_router.yaml", init_from="experts",
                 args=[*short, *ON_CIFAR10_LT])]),
        dict(name=RESULTS_ENTRY, dataset="demo", publish="results", device="gpu", stages=[
            dict(name="experts", config="configs/demo_ride.yaml",
                 args=[*short, "--drw-epoch", "0", "--model", "ride_resnet32_2e",
                       "--train-transform", "inat", "--img-size", "32"])]),
        dict(name=GPU_ENTRY, dataset="demo", publish="results", device="gpu", stages=[
            dict(name="train", config="configs/demo_nclpp.yaml", args=short)]),
    ])
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return path


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DEVICE": "cpu", "BENCH_S": "0", "CIFAR10": "", "PYTHON": sys.executable,
                   "WORKERS": "0", "MANIFEST": str(_manifest(tmp_path)), "PUBLISH_TO": str(tmp_path / "pub"),
                   "RUNS": str(tmp_path / "runs"), "GIT_DIR": str(tmp_path / "no-git"), **env}
    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "device_zoo.sh"), str(tmp_path / "out")], cwd=REPO_ROOT,
                          env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_builds_device_input_and_gpu_entries_first_and_hands_each_back_as_an_archive(tmp_path):
    proc = _run(tmp_path, SOURCE_COMMIT=STATED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(["device_zoo.json", f"{RESULTS_ENTRY}.tgz",
                                                            f"{WEIGHTS_ENTRY}.tgz", f"{GPU_ENTRY}.tgz"])
    summary = json.loads((out / "device_zoo.json").read_text())
    assert [(e["entry"], e["path"], e["status"]) for e in summary["entries"]] == [
        (GPU_ENTRY, "batched", "published"), (WEIGHTS_ENTRY, "batched", "published"),
        (RESULTS_ENTRY, "workers", "published")]
    assert summary["source_commit"] == STATED

    # unpacked into a checkout, the archives are the published folder, results and table
    checkout = tmp_path / "checkout"
    for name in (RESULTS_ENTRY, WEIGHTS_ENTRY):
        with tarfile.open(out / f"{name}.tgz") as archive:
            archive.extractall(checkout, filter="data")
    assert json.loads((checkout / "results" / "zoo" / f"{RESULTS_ENTRY}.json").read_text())["modes"]
    folder = checkout / "hub_cards" / WEIGHTS_ENTRY
    table = json.loads((checkout / "timm_longtail" / "models" / "published_weights.json").read_text())
    assert table[WEIGHTS_ENTRY]["sha256"] == sha256_of_file(folder / "model.safetensors")
    # no git there: the stated commit is what the weights record, and the device-side augmentation ran
    weights = json.loads((folder / "weights.json").read_text())
    assert weights["commits"] == [STATED]
    results = json.loads((folder / "results.json").read_text())
    assert all("--device-augment" in stage["extra_args"] for stage in results["zoo"]["stages"])
    workers = json.loads((checkout / "results" / "zoo" / f"{RESULTS_ENTRY}.json").read_text())
    assert "--device-augment" not in workers["zoo"]["stages"][0]["extra_args"]
    with tarfile.open(out / f"{GPU_ENTRY}.tgz") as archive:  # NCL++'s multi-copy recipe: batched too
        archive.extractall(checkout, filter="data")
    nclpp = json.loads((checkout / "results" / "zoo" / f"{GPU_ENTRY}.json").read_text())
    assert "--device-augment" in nclpp["zoo"]["stages"][0]["extra_args"]


@pytest.mark.slow
def test_an_exhausted_budget_starts_nothing_and_says_so(tmp_path):
    proc = _run(tmp_path, BUDGET_S="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out" / "device_zoo.json").read_text())
    assert [e["status"] for e in summary["entries"]] == ["not started"] * 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["device_zoo.json"]


def test_missing_data_is_one_error_line(tmp_path):
    proc = _run(tmp_path, CIFAR10=str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: no CIFAR-10 at")
    assert not (tmp_path / "out" / "device_zoo.json").exists()

"""scripts/device_zoo.sh end to end on the CPU, as the GPU machine runs it: a copy of the tree without
git (the commit stated), the entries without weights built GPU-first, each handed back as an archive;
and a rehearsal of the bare GPU machine: a ``git archive`` copy, a Python with only the image's packages
(this environment's, less what the image lacks and less the installed project), the carried wheels,
the preflight, the benchmark, a build, and a stop that parks, hands back and resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
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


# ---- the bare GPU machine, rehearsed on the CPU ----

NOT_IN_THE_IMAGE = ("datasets", "evaluate", "dill", "multiprocess", "_multiprocess")  # the device tool's KINDS.md


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> dict:
    """A ``git archive`` copy of the tree (tracked files as they stand), the wheels
    ``scripts/device_wheels.py`` carries (for this Python), and an "image" Python: a venv whose only
    packages are this environment's, less those the GPU image lacks and less this project's install."""
    root = tmp_path_factory.mktemp("bare")
    tree = root / "tree"
    tree.mkdir()
    snapshot = subprocess.run(["git", "stash", "create"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip() or "HEAD"
    archive = subprocess.run(["git", "archive", snapshot], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    assert not (tree / ".git").exists()

    packages = root / "image-packages"
    packages.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for item in ours.iterdir():
        name = item.name.split("-")[0]
        if name in NOT_IN_THE_IMAGE or name.startswith(("timm_longtail", "__editable__")) or item.suffix == ".pth":
            continue
        (packages / item.name).symlink_to(item)
    image = root / "image"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(image)], check=True)
    purelib = subprocess.run([str(image / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "image_packages.pth").write_text(f"{packages}\n")

    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheels = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "device_wheels.py"), "--python-version",
                             python_version, "--out", str(tree / ".whl")], capture_output=True, text=True)
    assert wheels.returncode == 0, wheels.stdout + wheels.stderr
    return dict(tree=tree, python=str(image / "bin" / "python"))


def _bare_manifest(path: Path, entry: str, epochs: int, steps: int) -> Path:
    stage = dict(name="experts", config="configs/demo_ride.yaml",
                 args=["--epochs", str(epochs), "--max-steps-per-epoch", str(steps), "--warmup-epochs", "0",
                       "--drw-epoch", "0", "--model", "ride_resnet32_2e", *FAST])
    path.write_text(yaml.safe_dump(dict(data_dirs=dict(demo=None), entries=[
        dict(name=entry, dataset="demo", publish="results", device="gpu", stages=[stage])])), encoding="utf-8")
    return path


def _bare_env(bare: dict, tmp_path: Path, manifest: Path, **env: str) -> dict:
    """What the GPU machine's shell has: no project install, no PYTHONPATH, no git."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, "DEVICE": "cpu", "CIFAR10": "",
            "PYTHON": bare["python"], "WORKERS": "0", "MANIFEST": str(manifest), "SOURCE_COMMIT": STATED,
            "PUBLISH_TO": str(bare["tree"]), "RUNS": str(tmp_path / "runs"), "SITE": str(tmp_path / "site"),
            "GIT_DIR": str(tmp_path / "no-git"), **env}


def _no_process_left(folder: Path) -> bool:
    """No process mentions ``folder`` in its command line (the builds' train.py run in sessions of their own)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder).encode() in cmdline.read_bytes():
                return False
        except OSError:
            continue
    return True


@pytest.mark.slow
def test_the_image_python_cannot_import_the_project_or_the_data_libraries_without_the_wheels(bare, tmp_path):
    probe = "import importlib.util as u; print([n for n in ('timm_longtail', 'datasets', 'evaluate', 'timm', 'torch') if u.find_spec(n)])"
    found = subprocess.run([bare["python"], "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                           env=_bare_env(bare, tmp_path, tmp_path / "none.yaml"))
    assert found.stdout.strip() == "['timm', 'torch']"
    # the preflight stops in seconds, one line, when a package is missing (no wheels carried)
    environment = _bare_env(bare, tmp_path, _bare_manifest(tmp_path / "zoo.yaml", "x.demo", 1, 1),
                            WHEELS=str(tmp_path / "no-wheels"))
    started = time.time()
    proc = subprocess.run(["bash", "scripts/device_zoo.sh", str(tmp_path / "out")], cwd=bare["tree"], env=environment,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and time.time() - started < 60
    assert proc.stderr.strip() == ("error: preflight: datasets is missing here: carry its wheel "
                                   "(scripts/device_wheels.py)"), proc.stderr
    assert not (tmp_path / "out" / "device_zoo.json").exists()


@pytest.mark.slow
def test_a_bare_copy_runs_preflight_benchmark_and_a_build_with_the_carried_wheels(bare, tmp_path):
    entry = "ride_resnet32_2e.demo_bare"
    manifest = _bare_manifest(tmp_path / "zoo.yaml", entry, 1, 2)
    bench = "--variants ride_resnet32_2e --settings fp32 --steps 1 --warmup 1 --batch-size 8"
    proc = subprocess.run(["bash", "scripts/device_zoo.sh", str(tmp_path / "out")], cwd=bare["tree"],
                          env=_bare_env(bare, tmp_path, manifest, BENCH_S="120", BENCH_ARGS=bench),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.json", "device_zoo.json", f"{entry}.tgz"]
    summary = json.loads((out / "device_zoo.json").read_text())
    preflight = summary["preflight"]
    # the image's timm is recent enough: its wheel stays behind; the four the image lacks come from the site
    assert sorted(w.split("-")[0] for w in preflight["installed_wheels"]) == ["datasets", "dill", "evaluate",
                                                                            "multiprocess"]
    assert preflight["found_in"]["datasets"].startswith(str(tmp_path / "site"))
    assert preflight["found_in"]["timm_longtail"] == str(bare["tree"] / "timm_longtail")
    assert preflight["device"] == "cpu" and preflight["versions"]["torch"]
    assert "preflight: datasets" in proc.stdout
    benchmark = json.loads((out / "benchmark.json").read_text())
    assert [(r["variant"], r["setting"]) for r in benchmark["results"]] == [("ride_resnet32_2e", "fp32")]
    assert benchmark["results"][0]["train_images_per_sec"] > 0
    assert [(e["entry"], e["status"]) for e in summary["entries"]] == [(entry, "published")]
    with tarfile.open(out / f"{entry}.tgz") as archive:
        assert archive.getnames() == [f"results/zoo/{entry}.json"]
    assert _no_process_left(tmp_path / "runs")


@pytest.mark.slow
def test_a_stopped_build_is_parked_handed_back_and_the_next_run_resumes_from_it(bare, tmp_path):
    entry = "ride_resnet32_2e.demo_parked"
    manifest = _bare_manifest(tmp_path / "zoo.yaml", entry, 12, 4)
    environment = _bare_env(bare, tmp_path, manifest, BENCH_S="0")
    out = tmp_path / "out"
    script = subprocess.Popen(["bash", "scripts/device_zoo.sh", str(out)], cwd=bare["tree"], env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = tmp_path / "runs" / entry / "experts" / "last.pth"
    deadline = time.time() + 300
    while not checkpoint.exists() and script.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "the build wrote no checkpoint"
    script.send_signal(signal.SIGTERM)  # the device call's end, as a scheduler would signal it
    log, _ = script.communicate(timeout=300)
    assert script.returncode == 0, log
    assert _no_process_left(tmp_path / "runs"), "a train.py outlived the script"
    summary = json.loads((out / "device_zoo.json").read_text())
    assert summary["stopped_by"] == "signal"
    assert [(e["entry"], e["status"]) for e in summary["entries"]] == [(entry, "stopped by a signal, parked")]
    assert sorted(p.name for p in out.iterdir()) == ["device_zoo.json", f"{entry}.parked.tgz"]
    with tarfile.open(out / f"{entry}.parked.tgz") as archive:
        names = set(archive.getnames())
    stage = f"zoo_parked/{entry}/experts"
    assert {f"{stage}/last.pth", f"{stage}/parked.json", f"{stage}/summary.csv", f"{stage}/zoo.json",
            f"{stage}/log.txt"} <= names
    parked = json.loads((bare["tree"] / stage / "parked.json").read_text())
    assert parked["status"] == "partial" and 1 <= parked["epoch"] < 12

    # back here the archive is unpacked into the checkout and committed; the next GPU run (a fresh
    # machine: no runs folder) restores the parked checkpoint and finishes the stage
    environment.update(RUNS=str(tmp_path / "runs-2"), SITE=str(tmp_path / "site-2"))
    proc = subprocess.run(["bash", "scripts/device_zoo.sh", str(tmp_path / "out-2")], cwd=bare["tree"],
                          env=environment, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out-2" / "device_zoo.json").read_text())
    assert [(e["entry"], e["status"]) for e in summary["entries"]] == [(entry, "published")]
    record = json.loads((tmp_path / "runs-2" / entry / "experts" / "zoo.json").read_text())
    assert [segment["resumed"] for segment in record["segments"]][-1] is True
    assert "restored the parked checkpoint" in proc.stdout + proc.stderr
    assert not (bare["tree"] / "zoo_parked" / entry).exists()  # publishing removed it


@pytest.mark.slow
def test_the_budget_stops_a_build_parks_it_and_leaves_no_process(bare, tmp_path):
    """The budget (90 s from the script's start: the first 5-step epochs are done by then) ends a 200-epoch
    stage: stopped after its step, parked and handed back, the script done long before the device
    call's limit, nothing left running."""
    entry = "ride_resnet32_2e.demo_budget"
    manifest = _bare_manifest(tmp_path / "zoo.yaml", entry, 200, 5)
    environment = _bare_env(bare, tmp_path, manifest, BENCH_S="0", BUDGET_S="90", MIN_START_S="0")
    proc = subprocess.run(["bash", "scripts/device_zoo.sh", str(tmp_path / "out")], cwd=bare["tree"],
                          env=environment, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out" / "device_zoo.json").read_text())
    assert [(e["entry"], e["status"]) for e in summary["entries"]] == [(entry, "stopped at the budget, parked")], proc.stdout + proc.stderr
    assert summary["stopped_by"] == "" and summary["elapsed_s"] < 90 + 45
    with tarfile.open(tmp_path / "out" / f"{entry}.parked.tgz") as archive:
        assert f"zoo_parked/{entry}/experts/last.pth" in archive.getnames()
    assert 1 <= json.loads((bare["tree"] / "zoo_parked" / entry / "experts" / "parked.json").read_text())["epoch"] < 200
    assert _no_process_left(tmp_path / "runs")

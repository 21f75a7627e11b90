"""What a zoo build records about a run: machine paths as labels (``<runs>``, ``<data:KEY>``, the checkout)."""
from __future__ import annotations

from pathlib import Path

from conftest import REPO_ROOT
from timm_longtail.zoo import BuildSettings, Manifest
from timm_longtail.zoo.provenance import labelled


def _manifest(tmp_path: Path) -> Manifest:
    """The checkout's configs, CIFAR-10-LT in the demo folder."""
    return Manifest(path=tmp_path / "zoo.yaml", root=REPO_ROOT, data_dirs={"cifar10_lt": "timm_longtail/data/demo"})


def test_paths_are_labelled_only_at_a_folder_boundary(tmp_path):
    """``/work/main`` and the runs folder are labelled; a sibling such as ``/work/main-2`` is not."""
    manifest = _manifest(tmp_path)
    runs = tmp_path / "zoo-runs"
    root = manifest.root.resolve()
    text = (f"-c {root}/configs/a.yaml --output {runs}/x --resume={runs}-old/x/last.pth "
            f"--notes {root}-2/configs/b.yaml --cwd {root}")
    assert labelled(text, manifest, BuildSettings(runs_dir=runs)) == (
        f"-c configs/a.yaml --output <runs>/x --resume={runs}-old/x/last.pth "
        f"--notes {root}-2/configs/b.yaml --cwd .")


def test_a_path_recorded_through_a_worktree_gets_the_same_label(tmp_path):
    """A build run from ``/work/zoo-src-54`` records its data as ``/work/zoo-src-54/../shared/data/c10``:
    ``zoo publish`` from the main checkout labels it as the build did, not as ``../shared/data/c10``."""
    manifest = _manifest(tmp_path)
    runs, data = tmp_path / "zoo-runs", tmp_path / "shared" / "data" / "c10"
    settings = BuildSettings(runs_dir=runs, data_dirs={"cifar10_lt": data})
    text = f"--data-dir {tmp_path}/zoo-src-54/../shared/data/c10 --output {tmp_path}/zoo-src-54/../zoo-runs/x"
    assert labelled(text, manifest, settings) == "--data-dir <data:cifar10_lt> --output <runs>/x"

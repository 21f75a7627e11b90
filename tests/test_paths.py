"""Paths as results files and cards show them: relative to a checkout of this project, never absolute."""
from __future__ import annotations

from pathlib import Path

import pytest

from timm_longtail._paths import REPO_ROOT_ENV, cards_dir, portable_path, portable_paths
from timm_longtail.errors import UserInputError
from timm_longtail.hub.card import load_reference
from timm_longtail.models.weights import committed_weights_file


def _checkout(folder: Path) -> Path:
    """A folder that looks like a checkout (or git worktree) of this project."""
    (folder / "timm_longtail").mkdir(parents=True)
    (folder / "train.py").write_text("")
    (folder / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git is a file
    return folder


def test_paths_inside_beside_and_outside_the_checkout(tmp_path):
    main = _checkout(tmp_path / "main")
    assert portable_path(main / "runs" / "last.pth", root=main) == "runs/last.pth"
    assert portable_path(tmp_path / "shared" / "data", root=main) == "../shared/data"
    assert portable_path("/elsewhere/imagenet", root=main) == "imagenet"
    assert portable_path("configs/a.yaml", root=main) == "configs/a.yaml"


def test_a_path_in_another_worktree_is_relative_to_that_worktree(tmp_path):
    main, worktree = _checkout(tmp_path / "main"), _checkout(tmp_path / "zoo-src")
    command = (f"train.py -c {worktree}/configs/a.yaml --output {tmp_path}/zoo-runs/x "
               f"--initial-checkpoint={tmp_path}/zoo-runs/x/experts/last.pth")
    assert portable_paths(command, root=main) == (
        "train.py -c configs/a.yaml --output ../zoo-runs/x --initial-checkpoint=../zoo-runs/x/experts/last.pth")
    plain = tmp_path / "not-a-checkout"
    plain.mkdir()
    (plain / ".git").mkdir()  # some other repository: only the name is kept
    assert portable_path(plain / "sub" / "file.txt", root=tmp_path / "main" / "x") == "file.txt"


def test_a_path_in_a_removed_worktree_is_relative_to_this_checkout(tmp_path):
    # a teacher trained from a worktree removed since: its recorded config reads as this checkout's file
    main = _checkout(tmp_path / "main")
    (main / "configs").mkdir()
    (main / "configs" / "a.yaml").write_text("")
    gone = tmp_path / "zoo-src-47"
    assert portable_path(gone / "configs" / "a.yaml", root=main) == "configs/a.yaml"
    # a file this checkout lacks, or a folder still on disk, keeps the rules above
    assert portable_path(gone / "configs" / "b.yaml", root=main) == "../zoo-src-47/configs/b.yaml"
    present = tmp_path / "present"
    (present / "configs").mkdir(parents=True)
    assert portable_path(present / "configs" / "a.yaml", root=main) == "../present/configs/a.yaml"
    # the same path recorded relative while the worktree existed (a teacher's lineage in a checkpoint)
    assert portable_path("../zoo-src-47/configs/a.yaml", root=main) == "configs/a.yaml"
    assert portable_path("../zoo-src-47/configs/b.yaml", root=main) == "../zoo-src-47/configs/b.yaml"
    assert portable_paths("train.py -c ../zoo-src-47/configs/a.yaml --output <runs>/x", root=main) == (
        "train.py -c configs/a.yaml --output <runs>/x")
    assert portable_paths("train.py --config=../zoo-src-47/configs/a.yaml --output <runs>/x", root=main) == (
        "train.py --config=configs/a.yaml --output <runs>/x")  # --flag=path follows the same rule
    assert portable_paths(f"train.py --output '<runs>/x' --notes 'a b' --c {gone}/configs/a.yaml", root=main) == (
        "train.py --output <runs>/x --notes 'a b' --c configs/a.yaml")  # quotes only where a shell splits
    kept = "train.py -c ../present/configs/a.yaml --output <runs>/x"  # nothing to rewrite: quoting kept too
    assert portable_paths(kept, root=main) == kept


def test_cards_and_committed_weights_follow_the_same_checkout(tmp_path, monkeypatch):
    """$TIMM_LONGTAIL_REPO_ROOT moves the cards' templates and reference data with the committed weights
    (before, the cards kept reading the package's own checkout)."""
    checkout = tmp_path / "other_checkout"
    (checkout / "hub_cards" / "ride_resnet32_3e.x").mkdir(parents=True)
    (checkout / "hub_cards" / "ride_resnet32_3e.x" / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv(REPO_ROOT_ENV, str(checkout))
    assert cards_dir() == checkout.resolve() / "hub_cards"
    assert committed_weights_file("ride_resnet32_3e.x") == cards_dir() / "ride_resnet32_3e.x" / "model.safetensors"
    with pytest.raises(UserInputError, match="reference.yaml"):
        load_reference()  # this checkout has none
    (checkout / "hub_cards" / "reference.yaml").write_text("methods: {ride: {title: from the other checkout}}\n")
    assert load_reference()["methods"]["ride"]["title"] == "from the other checkout"

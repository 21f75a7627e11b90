"""Checkpoint helpers: the command a run records as its recipe; the commit a code version names."""
from __future__ import annotations

import subprocess

import pytest

from conftest import REPO_ROOT
from timm_longtail.checkpoint import code_version, commit_of_version, start_command


@pytest.mark.parametrize("command, expected", [
    ("train.py -c a.yaml --resume runs/x/last.pth --epochs 2", "train.py -c a.yaml --epochs 2"),
    ("train.py -c a.yaml --resume=runs/x/last.pth", "train.py -c a.yaml"),
    ("train.py --resume '/my runs/last.pth' -c a.yaml", "train.py -c a.yaml"),
    ("train.py -c a.yaml --resume-mode x", "train.py -c a.yaml --resume-mode x"),  # another flag: kept
    ("train.py -c a.yaml", "train.py -c a.yaml"),
])
def test_start_command_drops_only_resume(command, expected):
    assert start_command(command) == expected


def test_start_command_passes_non_strings_through():
    assert start_command(None) is None


@pytest.mark.parametrize("version, commit", [
    ("0.1.0+g1a2b3c4", "1a2b3c4"), ("0.1.0+g" + "f" * 40, "f" * 40),
    ("0.1.0", None), ("0.1.0+gxyz1234", None), (None, None),
])
def test_commit_of_version_reads_what_code_version_writes(version, commit):
    assert commit_of_version(version) == commit


def test_code_version_names_this_checkout_commit():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    assert head.startswith(commit_of_version(code_version()))

"""Checkpoint helpers: the command a run records as its recipe."""
from __future__ import annotations

import pytest

from timm_longtail.checkpoint import start_command


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

"""Checkpoint helpers: the command a run records as its recipe; strict JSON of results and metadata;
atomic writes on a full disk."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from timm_longtail.checkpoint import atomic_write, start_command
from timm_longtail.errors import OutputWriteError


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


def test_json_safe_gives_strict_json_of_results_and_metadata():
    import json
    from pathlib import Path

    import numpy as np

    from timm_longtail.checkpoint import json_safe

    value = {"acc": (1, np.int64(2), np.float32(0.5), float("nan"), float("inf")), 3: torch.tensor([1.0, 2.0]),
             "path": Path("runs/x"), "flag": np.bool_(True), "scalar": torch.tensor(3), "none": None}
    safe = json_safe(value)
    assert safe == {"acc": [1, 2, 0.5, None, None], "3": [1.0, 2.0], "path": "runs/x", "flag": True, "scalar": 3,
                    "none": None}
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe


def test_a_full_disk_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("previous")

    def write_to_a_full_disk(tmp: str) -> None:
        Path(tmp).write_text("half")
        with open("/dev/full", "w") as full:  # the kernel's ENOSPC, no patching
            full.write("x" * 65536)
            full.flush()

    with pytest.raises(OutputWriteError) as caught:
        atomic_write(target, write_to_a_full_disk)
    message = str(caught.value)
    assert "No space left on device" in message and "the previous file is unchanged" in message
    assert "\n" not in message
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(OutputWriteError, match="no file was written"):
        atomic_write(tmp_path / "new.json", write_to_a_full_disk)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]

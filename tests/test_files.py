"""Files written whole or not at all: strict JSON of results and metadata; atomic writes on a full disk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from timm_longtail.errors import OutputWriteError
from timm_longtail.files import atomic_write, json_safe, replace_dir


def test_json_safe_gives_strict_json_of_results_and_metadata():
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


def test_replace_dir_swaps_in_the_new_folder_and_leaves_nothing_aside(tmp_path):
    target, new = tmp_path / "out", tmp_path / ".out.tmp"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old folder is gone, no temporary left
    fresh = tmp_path / ".again.tmp"
    fresh.mkdir()
    replace_dir(fresh, tmp_path / "again")  # no folder there yet
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "out"]

"""Reference checkpoints are read without running any of their pickled code: a booby-trapped file,
a truncated one or an unknown class is one clear error, with nothing run and nothing written."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import timm_longtail  # noqa: F401
import torch

from conftest import REPO_ROOT
from timm_longtail.convert import ForeignObject, load_foreign_checkpoint
from timm_longtail.errors import UserInputError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class _Trap:
    """Pickles as a call of os.system: what a malicious checkpoint would do on torch.load(weights_only=False)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _trapped_checkpoint(path: Path, marker: Path) -> None:
    state = load_foreign_checkpoint(FIXTURES / "ride_r32_2e_stage1_cifar100.pth")
    state["config"] = _Trap(marker)
    torch.save(state, path)


def test_the_ride_config_parser_comes_back_as_inert_data():
    checkpoint = load_foreign_checkpoint(FIXTURES / "ride_r32_3e_ea_cifar100.pth")
    config = checkpoint["config"]
    assert isinstance(config, ForeignObject) and type(config).__module__.startswith("timm_longtail")
    assert config["arch"]["type"] == "ResNet32EAModel" and config["arch"]["args"]["num_experts"] == 3
    assert isinstance(config.state["_save_dir"], str)  # a pathlib path, rebuilt as its text
    assert float(checkpoint["monitor_best"]) == pytest.approx(0.4861)  # a numpy scalar, rebuilt as a number


def test_plain_weights_only_load_refuses_the_same_file():
    """Why the allow-list exists: torch's own weights-only load does not read RIDE's files."""
    with pytest.raises(pickle.UnpicklingError):
        torch.load(FIXTURES / "ride_r32_3e_ea_cifar100.pth", weights_only=True)


def test_a_booby_trapped_checkpoint_is_refused_and_its_command_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    trapped = tmp_path / "trapped.pth"
    _trapped_checkpoint(trapped, marker)
    with pytest.raises(UserInputError, match="nothing in it was run"):
        load_foreign_checkpoint(trapped)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "timm_longtail.convert", "{file}", "--out", "{out}"],
    [sys.executable, "validate.py", "--checkpoint", "{file}", "--dataset", "demo"],
])
@pytest.mark.slow
def test_the_commands_refuse_it_with_one_line_and_write_nothing(tmp_path, command):
    marker, trapped, out = tmp_path / "pwned", tmp_path / "trapped.pth", tmp_path / "out"
    _trapped_checkpoint(trapped, marker)
    argv = [part.format(file=trapped, out=out) for part in command]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "refused" in done.stderr
    assert not marker.exists() and not out.exists()


def test_timm_create_model_refuses_it_too(tmp_path):
    marker, trapped = tmp_path / "pwned", tmp_path / "trapped.pth"
    _trapped_checkpoint(trapped, marker)
    import timm
    with pytest.raises(UserInputError, match="refused"):
        timm.create_model("ride_resnet32_2e", pretrained=True, pretrained_cfg_overlay=dict(file=str(trapped)))
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_a_truncated_file_is_one_clear_error(tmp_path, cut):
    source = FIXTURES / "ride_r32_3e_ea_cifar100.pth"
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(source.read_bytes()[:int(source.stat().st_size * cut)])
    with pytest.raises(UserInputError, match="not a readable checkpoint"):
        load_foreign_checkpoint(truncated)


def test_an_unknown_class_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {}, "config": ForeignClassOutsideTheList()}, path)
    with pytest.raises(UserInputError, match="refused"):
        load_foreign_checkpoint(path)


class ForeignClassOutsideTheList:
    pass


def test_bytes_that_are_no_checkpoint_are_unreadable_not_refused(tmp_path):
    """torch's weights-only unpickler raises the same error type for garbage as for a forbidden global;
    garbage must read as unreadable, with the unpickler's own reason, not as a file asking to run code."""
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserInputError, match=r"not a readable checkpoint .*Unsupported operand") as caught:
        load_foreign_checkpoint(garbage)
    assert "Weights only load failed" not in str(caught.value)

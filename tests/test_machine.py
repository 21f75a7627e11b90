"""--device resolution, shared by train.py, validate.py and analyze.py."""
import pytest
import torch

from timm_longtail._machine import resolve_device
from timm_longtail.errors import UserInputError


def test_default_is_cuda_when_available_else_cpu():
    assert resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name,message", [
    ("gpu0", "is not a torch device"),
    *([("cuda", "CUDA is not available here")] if not torch.cuda.is_available() else
      [(f"cuda:{torch.cuda.device_count()}", "CUDA device(s) here")]),
])
def test_a_device_this_machine_lacks_is_one_clear_error(name, message):
    with pytest.raises(UserInputError, match=message):
        resolve_device(name)

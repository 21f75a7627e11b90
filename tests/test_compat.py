"""The torchvision shim: a fresh interpreter imports timm after timm_longtail."""
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_fresh_import_of_timm_after_package():
    code = "import timm_longtail, timm, torchvision; print(len(timm.list_models('ride_*')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "16"


def test_shim_is_idempotent():
    from timm_longtail._compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    ensure_torchvision_importable()

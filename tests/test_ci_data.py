"""CI's data guard: with ``TIMM_LT_REQUIRE_DATA=1`` a missing ``../shared`` fails the tests that need it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

NEEDS_DATA = "tests/data/test_sources.py::test_tiny_imagenet_lt_if100_train"


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TIMM_LT_REQUIRE_DATA"}  # CI's own setting aside
    environ.update(TIMM_LT_SHARED_DATA=str(tmp_path / "missing"), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NEEDS_DATA], cwd=REPO_ROOT,
                          env=environ, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_missing_shared_data_skips_locally_and_fails_in_ci(tmp_path):
    local = _pytest(tmp_path)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout + local.stderr
    ci = _pytest(tmp_path, TIMM_LT_REQUIRE_DATA="1")
    assert ci.returncode == 1 and "1 error" in ci.stdout, ci.stdout + ci.stderr
    assert f"shared data not found at {tmp_path / 'missing'}" in ci.stdout

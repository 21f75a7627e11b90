#!/usr/bin/env python3
"""The wheels the GPU machine lacks, for its Python (3.12), at the versions this checkout is tested with.

    python scripts/device_wheels.py                 # -> .whl/ (git-ignored; carry it: carry [".whl"])
    python scripts/device_wheels.py --python-version 3.11 --out /tmp/whl   # a CPU rehearsal's Python

The lent GPU machine's image has torch, torchvision, timm, huggingface_hub, safetensors, pyarrow, pandas,
PyYAML, Jinja2 and the rest of our needs, but not ``datasets``, ``evaluate`` and their ``dill`` and
``multiprocess`` (the device tool's KINDS.md lists the image). Its timm version is not known from here,
so timm's wheel travels too; ``scripts/device_preflight.py`` installs it only where the image's timm is
below ``pyproject.toml``'s minimum. The versions are those installed in the Python running this script
(the environment the tests pass in), so the GPU run uses the combination CI checks. Needs the package
index (``pip download``); the folder is filled beside ``--out`` and put there whole.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from timm_longtail.files import replace_dir

ROOT = Path(__file__).resolve().parents[1]
# what the GPU image lacks (datasets, evaluate and their two own needs) plus timm, installed there only if older
CARRIED = ("datasets", "evaluate", "dill", "multiprocess", "timm")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def pinned() -> list[str]:
    """``name==version`` for each carried package, as installed here."""
    try:
        return [f"{name}=={importlib.metadata.version(name)}" for name in CARRIED]
    except importlib.metadata.PackageNotFoundError as missing:
        raise SystemExit(f"error: {missing.name} is not installed in {sys.executable}: run scripts/setup.sh first")


def download(out: Path, python_version: str) -> list[Path]:
    """Download the carried wheels (no dependencies: the image has the rest) into ``out``, replacing it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(tmp),
                   *pinned()]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or proc.stderr.splitlines()
            raise SystemExit(f"error: pip download failed: {lines[-1] if lines else proc.returncode}")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the GPU image's Python (default 3.12)")
    args = parser.parse_args(argv)
    wheels = download(args.out, args.python_version)
    size = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 1e6:6.2f} MB  {wheel.name}")
    print(f"{size / 1e6:6.2f} MB in {len(wheels)} wheels: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

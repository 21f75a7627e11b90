#!/usr/bin/env python3
"""Before the GPU run spends its minutes: install the carried wheels, then check every package and the device.

    python scripts/device_preflight.py --wheels .whl --site /tmp/device-zoo-site --device cuda --out pre.json

The GPU machine gets a copy of the tree, not an installed package, and an image that lacks some of our
needs (``scripts/device_wheels.py`` says which and fetches them). This installs the carried wheels into
``--site`` (each only where the image lacks it or has it below ``pyproject.toml``'s minimum), then checks every
dependency ``pyproject.toml`` names against what imports here, imports the package and its data
libraries, and looks at the device: one ``error:`` line and exit 2 within seconds where anything is
missing, instead of a build that fails minutes later. Prints each package's version and where it was
found; ``--out`` gets the same as JSON (``device_zoo.sh`` puts it in ``device_zoo.json``).
Run with ``PYTHONPATH`` holding ``--site`` and the tree (``device_zoo.sh`` sets it).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Dict, List

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
IMPORTED = ("timm_longtail", "datasets", "evaluate")  # the package (torch, torchvision, timm, hub...) and the data libraries


class PreflightError(Exception):
    """What stops the GPU run before it starts."""


def requirements() -> List[Requirement]:
    """The package's own dependencies, from ``pyproject.toml`` (the one list of them)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in project["dependencies"]]


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_wheels(wheels: Path, site: Path) -> List[str]:
    """``pip install --target site`` the carried wheels of the packages missing here or older than
    ``pyproject.toml`` accepts (the image's timm stays where it is recent enough). Returns the installed file names."""
    needed = {r.name.replace("_", "-").lower(): r for r in requirements()}
    chosen = []
    for wheel in sorted(wheels.glob("*.whl")):
        name = wheel.name.split("-")[0].replace("_", "-").lower()
        have = installed(name)
        if have is not None and (name not in needed or needed[name].specifier.contains(have, prereleases=True)):
            continue  # already here at a version we accept
        chosen.append(wheel)
    if chosen:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                   "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, chosen)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            raise PreflightError(f"the carried wheels did not install: {lines[-1] if lines else proc.returncode}")
        importlib.invalidate_caches()
    return [wheel.name for wheel in chosen]


def check(device: str) -> Dict[str, Any]:
    """Every dependency present at a version ``pyproject.toml`` accepts, the package importable, the device there."""
    versions: Dict[str, Any] = {}
    for requirement in requirements():
        have = installed(requirement.name)
        if have is None:
            raise PreflightError(f"{requirement.name} is missing here: carry its wheel (scripts/device_wheels.py)")
        if not requirement.specifier.contains(have, prereleases=True):
            raise PreflightError(f"{requirement.name} is {have} here; the package needs {requirement}: "
                                 f"carry its wheel (scripts/device_wheels.py)")
        versions[requirement.name] = have
    modules = {}
    for name in IMPORTED:
        try:
            module = importlib.import_module(name)
        except Exception as error:  # an ABI mismatch shows as any error at import
            raise PreflightError(f"import {name} failed: {type(error).__name__}: {error}".splitlines()[0])
        modules[name] = str(Path(module.__file__).parent)
    import timm
    import torch

    modules["timm"] = str(Path(timm.__file__).parent)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PreflightError(f"--device {device} but torch {torch.__version__} sees no CUDA device")
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    return dict(python=sys.version.split()[0], versions=versions, found_in=modules, device=device, gpu=gpu)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=None, help="folder of carried wheels (none: install nothing)")
    parser.add_argument("--site", type=Path, default=Path("/tmp/device-zoo-site"), help="where they are installed")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None, help="also write the findings here as JSON")
    args = parser.parse_args(argv)
    try:
        carried = install_wheels(args.wheels, args.site) if args.wheels and args.wheels.is_dir() else []
        found = check(args.device)
    except PreflightError as error:
        print(f"error: preflight: {error}", file=sys.stderr)
        return 2
    found["installed_wheels"] = carried
    for name, version in found["versions"].items():
        print(f"preflight: {name} {version}" + (f" ({found['found_in'][name]})" if name in found["found_in"] else ""))
    print(f"preflight: python {found['python']}, device {args.device}" + (f" ({found['gpu']})" if found["gpu"] else "")
          + (f", installed {len(carried)} carried wheels" if carried else ""))
    if args.out:  # by hand: timm_longtail.files would import timm before the carried wheel could replace it
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

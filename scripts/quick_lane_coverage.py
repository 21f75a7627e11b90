#!/usr/bin/env python3
"""Check that the quick test lane (``pytest -m "not slow"``) still exercises every module of timm_longtail.

    .venv/bin/python scripts/quick_lane_coverage.py            # runs the quick lane under coverage
    .venv/bin/python scripts/quick_lane_coverage.py -- tests/training   # or a part of it

A module counts as exercised when the lane ran at least one line inside one of its functions (its import
alone runs only the ``def`` lines); a module without functions, when it was imported. The test
subprocesses (train.py, torchrun, the zoo's stages) are measured too (coverage's ``patch = subprocess``).
Prints one line per module and exits 1 naming those the lane never ran. Slower than the lane itself.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
from pathlib import Path

import coverage

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "timm_longtail"
QUICK_LANE = "not slow"


def function_body_lines(path: Path) -> set[int]:
    """The lines of every function's body (its docstring left out): what only a call runs."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
                body = body[1:]
            lines.update(range(body[0].lineno, body[-1].end_lineno + 1))
    return lines


def run_lane(data_file: Path, pytest_args: list[str]) -> int:
    """The quick lane under coverage, subprocesses included; returns pytest's exit status."""
    rcfile = data_file.with_suffix(".rc")
    rcfile.write_text(f"[run]\nsource = {PACKAGE}\nparallel = true\npatch = subprocess\ndata_file = {data_file}\n")
    command = [sys.executable, "-m", "coverage", "run", f"--rcfile={rcfile}", "-m", "pytest", "-q",
               "-p", "no:cacheprovider", "-m", QUICK_LANE, *pytest_args]
    return subprocess.run(command, cwd=REPO_ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pytest_args", nargs="*", help="after --: tests or pytest options (default: all tests)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        data_file = Path(folder) / ".coverage"
        status = run_lane(data_file, args.pytest_args)
        measured = coverage.Coverage(data_file=str(data_file))
        measured.combine(data_paths=[folder])
        data = measured.get_data()
        executed = {Path(name).resolve(): set(data.lines(name) or ()) for name in data.measured_files()}
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(REPO_ROOT).as_posix()
        ran, body = executed.get(path.resolve(), set()), function_body_lines(path)
        if body:
            shown = f"{len(ran & body)}/{len(body)} function lines"
            exercised = bool(ran & body)
        else:
            shown, exercised = ("imported" if ran else "never imported"), bool(ran)
        print(f"{'ok ' if exercised else 'NO '} {name}: {shown}")
        if not exercised:
            missing.append(name)
    if status != 0:
        print(f"error: the quick lane failed (pytest exit status {status})", file=sys.stderr)
        return 1
    if missing:
        print(f"error: the quick lane never runs {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"every module of timm_longtail is exercised by the quick lane ({QUICK_LANE!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

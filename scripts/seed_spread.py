"""Seed-to-seed spread of one recipe: the test top-1 of runs that differ only in ``--seed``.

    python scripts/seed_spread.py RUN_DIR [RUN_DIR ...] --output results/reference/<name>.json

Each RUN_DIR is a finished ``train.py`` run (its ``final.json``; its ``last.pth`` gives the code version).
The runs must share one command apart from ``--seed`` and ``--experiment`` (and ``--resume``), or
the spread would mix recipes: that is refused with one error line. Writes per-seed results and, for
top-1 and many / medium / few, the mean, sample standard deviation, min, max and range.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import timm_longtail  # noqa: F401  (the torchvision shim, before anything imports timm)
from timm_longtail._paths import portable_paths
from timm_longtail.checkpoint import load_checkpoint
from timm_longtail.files import atomic_write_json
from timm_longtail.errors import UserInputError, run_command
from timm_longtail.hub import load_results

METRICS = ("top1", "top1_many", "top1_medium", "top1_few", "top5")
PER_RUN_FLAGS = ("--seed", "--experiment", "--resume")  # the flags a seed run may differ in (each takes one value)


def recipe_command(command: str) -> List[str]:
    """``command`` without the per-run flags and their values."""
    tokens, kept, skip = shlex.split(command), [], False
    for token in tokens:
        if skip:
            skip = False
        elif token.split("=", 1)[0] in PER_RUN_FLAGS:
            skip = "=" not in token
        else:
            kept.append(token)
    return kept


def read_run(folder: Path, mode: str) -> Dict[str, Any]:
    """One run's seed, command, code version, speed and ``mode``'s test metrics."""
    final_path = folder / "final.json"
    if not final_path.is_file():
        raise UserInputError(f"{folder}: no final.json (not a finished train.py run)")
    final = load_results(final_path)  # the cards' strict reader: bad JSON or values are one clear error
    result = final.by_mode().get(mode)
    if result is None:
        raise UserInputError(f"{final_path}: no forward mode {mode!r} (has: {', '.join(final.by_mode())})")
    last = folder / "last.pth"
    version = load_checkpoint(last).get("version") if last.is_file() else None
    info = final.info
    return dict(
        seed=info["seed"], command=info["command"], version=version, epochs=info["epochs"],
        train_time_s=round(info["train_time_s"], 1), train_images_per_sec=round(info["train_images_per_sec"], 1),
        **{metric: None if getattr(result, metric) is None else round(getattr(result, metric), 2)
           for metric in METRICS},
    )


def spread(values: Sequence[float]) -> Dict[str, float]:
    """Mean, sample standard deviation (n - 1), min, max and range of ``values``, rounded to 0.01."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    out = dict(n=len(values), mean=statistics.fmean(values), std=std, min=min(values), max=max(values),
               range=max(values) - min(values))
    return {key: (value if key == "n" else round(value, 2)) for key, value in out.items()}


def summarize(folders: Sequence[Path], mode: str = "ensemble") -> Dict[str, Any]:
    """The spread of ``mode``'s metrics over the runs in ``folders`` (one recipe, different seeds)."""
    if len(folders) < 2:
        raise UserInputError("a seed spread needs at least two runs")
    runs = [read_run(Path(folder), mode) for folder in folders]
    recipes = {tuple(recipe_command(run["command"])) for run in runs}
    if len(recipes) != 1:
        raise UserInputError(f"the runs differ in more than {'/'.join(PER_RUN_FLAGS)}: "
                             + " | ".join(shlex.join(r) for r in sorted(recipes)))
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise UserInputError(f"two runs share a seed: {seeds}")
    metrics = {metric: spread([run[metric] for run in runs]) for metric in METRICS
               if all(run[metric] is not None for run in runs)}
    return portable_paths(dict(
        what=f"seed-to-seed spread of one recipe, forward mode {mode}, test split, last epoch",
        recipe_command=shlex.join(next(iter(recipes))), seeds=seeds, forward_mode=mode,
        spread=metrics, runs=runs,
    ))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished train.py run folders (final.json)")
    parser.add_argument("--mode", default="ensemble", help="forward mode whose metrics to compare")
    parser.add_argument("--output", type=Path, required=True, help="the summary JSON to write")
    args = parser.parse_args(argv)
    return run_command(lambda: _write_summary(args.runs, args.mode, args.output))


def _write_summary(runs: Sequence[Path], mode: str, output: Path) -> None:
    summary = summarize(runs, mode)
    atomic_write_json(output, summary)
    top1 = summary["spread"]["top1"]
    print(f"{len(summary['seeds'])} seeds {summary['seeds']}: top-1 mean {top1['mean']:.2f}, std {top1['std']:.2f}, "
          f"range {top1['min']:.2f}-{top1['max']:.2f} -> {output}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The papers' analyses of a long-tail model, one subcommand each.

    python analyze.py hardest-negative --pretrained --model ride_resnet32_3e --dataset cifar10_lt \\
        --data-dir ../shared/data/cifar10 --results-file results/r32_hardneg.json
    python analyze.py expert-usage --checkpoint runs/router/last.pth --results-file usage.json

Subcommands: hardest-negative, calibration, test-agnostic, expert-usage, expert-disagreement,
bias-variance, lossless-subset (``analyze.py <name> --help``). Models and data are given as to ``validate.py``. Each prints a
table and, with ``--results-file``, writes JSON, a CSV and a PNG beside it. Bad input prints one
``error: ...`` line and exits with status 2, writing nothing.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

import timm_longtail  # noqa: F401  (registers the models; makes torchvision importable before timm)
from timm_longtail.analysis.commands import build_parser, run_analysis
from timm_longtail.errors import run_command


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def analyze() -> None:  # the analysis' summary is written to files; the exit status is 0
        run_analysis(args.analysis, args)

    return run_command(analyze)


if __name__ == "__main__":
    sys.exit(main())

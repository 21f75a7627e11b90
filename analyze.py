#!/usr/bin/env python3
"""The papers' analyses of a long-tail model, one subcommand each.

    python analyze.py hardest-negative --pretrained --model ride_resnet32_3e --dataset cifar10_lt \\
        --data-dir ../shared/data/cifar10 --results-file results/r32_hardneg.json
    python analyze.py expert-usage --checkpoint runs/router/last.pth --results-file usage.json

Subcommands: hardest-negative, calibration, test-agnostic, expert-usage, expert-disagreement
(``analyze.py <name> --help``). Models and data are given as to ``validate.py``. Each prints a
table and, with ``--results-file``, writes JSON, a CSV and a PNG beside it. Bad input prints one
``error: ...`` line and exits with status 2, writing nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

import timm_longtail  # noqa: F401  (registers the models; makes torchvision importable before timm)
from timm_longtail.analysis.commands import ANALYSES, add_analysis_args, run_analysis
from timm_longtail.errors import OutputWriteError, UserInputError, user_error_message
from timm_longtail.evaluation.setup import add_model_data_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Analyses of timm-longtail models (RIDE, NCL++, SADE figures)")
    commands = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for name, analysis in ANALYSES.items():
        sub = commands.add_parser(name, help=analysis.help, description=analysis.help,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_model_data_args(sub)
        add_analysis_args(sub, name)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_analysis(args.analysis, args)
    except UserInputError as error:
        print(f"error: {user_error_message(error)}", file=sys.stderr)
        return 2
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Evaluate a RIDE / NCL++ model on a long-tailed test set: top-1/5, many/medium/few, compute.

    python validate.py --checkpoint output/train/last.pth --dataset cifar100_lt \\
        --data-dir ../shared/data/cifar100 --forward-mode all --results-file results/r32.json
    python validate.py --model ride_resnet32_3e --dataset demo --forward-mode all

One row per forward mode (``all`` = every mode the model supports; ``routed`` only with a
trained router). Results are printed as a table and, with ``--results-file``, written as JSON
(plus a CSV beside it for several rows) and a per-class accuracy plot. Shot splits use the
checkpoint's training class counts when it stores them, else the dataset's training split.
Bad input prints one ``error: ...`` line and exits with status 2, writing nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import timm_longtail  # noqa: F401  (registers the models; makes torchvision importable before timm)
from timm_longtail.errors import ShortErrorParser, UserInputError, run_command
from timm_longtail.evaluation.setup import add_model_data_args, prepare_evaluation

_logger = logging.getLogger("validate")


def build_parser() -> argparse.ArgumentParser:
    parser = ShortErrorParser(description="Long-tail evaluation of timm-longtail models",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_data_args(parser)
    parser.add_argument("--forward-mode", default="ensemble",
                        help="ensemble | expert:<i> | routed | all (comma-separated for several)")
    group = parser.add_argument_group("output")
    group.add_argument("--results-file", default=None, help="JSON results (a CSV beside it for several modes)")
    group.add_argument("--plot-file", default=None, help="per-class accuracy PNG (default: beside --results-file)")
    group.add_argument("--no-plot", action="store_true", help="do not write the plot")
    return parser


def run(args: argparse.Namespace) -> int:
    from timm_longtail.evaluation import evaluate_model, format_table, write_results

    if args.no_plot and args.plot_file:
        raise UserInputError("--plot-file and --no-plot contradict each other")
    setup = prepare_evaluation(args)
    rows = evaluate_model(setup.model, setup.loader, args.forward_mode, class_counts=setup.class_counts,
                          class_counts_source=setup.class_counts_source, input_size=setup.input_size,
                          shot_split=setup.shot_split, device=setup.device, amp=args.amp,
                          channels_last=args.channels_last, progress=not args.no_progress, context=setup.context)
    print(f"{setup.context['model']} on {setup.context['dataset']} ({setup.context['split']}, "
          f"{rows[0]['num_samples']} images, class counts from the {setup.class_counts_source}; "
          f"{setup.shot_split.describe()})")
    print(format_table(rows))

    plot_file = None
    if not args.no_plot:
        plot_file = args.plot_file or (str(Path(args.results_file).with_suffix(".png")) if args.results_file else None)
    for path in write_results(rows, args.results_file, plot_file, setup.shot_split, setup.title,
                              setup.dataset.class_names):
        print(f"wrote {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

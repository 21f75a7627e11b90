#!/usr/bin/env python3
"""Train RIDE, NCL++ and baseline long-tailed classifiers (timm-style command line).

    python train.py --config configs/ride_r32_3e_cifar100lt.yaml --data-dir data/cifar100
    torchrun --nproc_per_node 4 train.py --config configs/nclpp_r50_imagenetlt.yaml --data-dir ...

``--config`` YAML keys are the argument names (``python train.py --help``); flags override them.
Bad input prints ``error: <what to fix>`` and exits with status 2; SIGINT/SIGTERM stop after the
current step and leave ``last.pth`` (the last complete epoch), which ``train.py --resume last.pth``
alone continues exactly: the checkpoint records every setting. A full disk prints one ``error:``
line and exits with status 1, every file whole or absent.
"""
from __future__ import annotations

import logging
import shlex
import sys
from typing import Sequence

import timm_longtail  # noqa: F401  (registers the models; makes torchvision importable before timm)
from timm_longtail.errors import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), train, return the exit status."""
    from timm.utils import setup_default_logging

    from timm_longtail.training import given_settings, parse_args, run

    argv = list(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        setup_default_logging()
    def train() -> int:
        try:
            args = parse_args(argv)
            return run(args, command=shlex.join(["train.py", *argv]), given=given_settings(argv))
        except KeyboardInterrupt:  # outside the training steps (set-up, final evaluation)
            print("interrupted; the last complete epoch's last.pth stays resumable", file=sys.stderr)
            return 130

    return run_command(train)  # a disk-full OutputWriteError leaves the last checkpoint as it was


if __name__ == "__main__":
    sys.exit(main())

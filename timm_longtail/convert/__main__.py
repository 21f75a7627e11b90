"""``python -m timm_longtail.convert <file> --out <folder>``: a checkpoint saved by RIDE's, NCL's or
LDAM-DRW's own trainer as a Hub-ready timm folder (see :mod:`timm_longtail.convert.export`)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import timm_longtail  # noqa: F401  (registers the models; torchvision importable before timm)
from timm_longtail.errors import ShortErrorParser, run_command

from .export import convert_checkpoint

EPILOG = """examples:
  python -m timm_longtail.convert cifar_standard_055148/checkpoint-epoch5.pth --out converted/ride3e
  python -m timm_longtail.convert ncl_epoch_400.pth --tag ncl_cifar100_lt_if100 --out converted/ncl
  python -m timm_longtail.convert ckpt.pth.tar --tag ldamdrw_cifar10_lt_if100 --out converted/ldam \\
      --eval-data-dir ../shared/data/cifar10
then: python -m timm_longtail.hub push converted/ride3e --repo-id <you>/<model>.<tag>
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ShortErrorParser(
        prog="python -m timm_longtail.convert", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a checkpoint of RIDE's, NCL's or LDAM-DRW's own code into a timm-longtail folder "
                    "(model.safetensors, config.json, README.md). Its pickled code is never run.")
    parser.add_argument("file", help="the checkpoint (.pth / .pth.tar) as the reference trainer saved it")
    parser.add_argument("--out", required=True, help="folder to write (created; see --overwrite)")
    parser.add_argument("--model", default=None, help="timm model name (default: read from the file; checked)")
    parser.add_argument("--tag", default=None,
                        help="<code>_<dataset> tag (default: from RIDE's config; NCL / LDAM-DRW files need it)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--eval-data-dir", default=None,
                        help="measure every forward mode on the tag's test split, read from this folder")
    parser.add_argument("--eval-samples", type=int, default=None, help="with --eval-data-dir: this many test images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cards-dir", default=None, help="hub_cards/ folder (default: the source checkout's)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        result = convert_checkpoint(args.file, args.out, model_name=args.model, tag=args.tag,
                                    overwrite=args.overwrite, eval_data_dir=args.eval_data_dir,
                                    eval_samples=args.eval_samples, device=args.device, workers=args.workers,
                                    cards_dir=args.cards_dir)
        print(f"converted {args.file} -> {result.folder} ({result.model_name}.{result.tag}, "
              f"model.safetensors sha256 {result.sha256})")
    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m timm_longtail.hub {export,card,figures,lossless,push} ...`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..errors import ShortErrorParser, run_command
from .export import (export_checkpoint, record_card, rewrite_card, table_entry, write_folder_figures,
                     write_folder_lossless_subset)
from .push import push_folder

EPILOG = """examples:
  python -m timm_longtail.hub export --checkpoint runs/ride-c100/best.pth --results runs/ride-c100/results.json \\
      --out exports/ride_resnet32_3e.cifar100_lt_if100 --record
  python -m timm_longtail.hub card hub_cards/ride_resnet32_3e.cifar10_lt_if100   (card code changed; no runs needed)
  python -m timm_longtail.hub figures hub_cards/ride_resnet32_3e.cifar10_lt_if100 --data-dir ../shared/data/cifar10
  python -m timm_longtail.hub lossless hub_cards/ride_resnet32_3e.cifar10_lt_if100 --data-dir ../shared/data/cifar10 \
      --lossless-dir ../shared/data/cifar10-lossless-test-head
  HF_TOKEN=... python -m timm_longtail.hub push exports/ride_resnet32_3e.cifar100_lt_if100 \\
      --repo-id timm-longtail/ride_resnet32_3e.cifar100_lt_if100
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ShortErrorParser(
        prog="python -m timm_longtail.hub",
        description="Export trained weights for the Hugging Face Hub and push them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="checkpoint + results -> model.safetensors, config.json, README.md")
    export.add_argument("--checkpoint", required=True, help="train.py checkpoint (.pth) or an exported .safetensors")
    export.add_argument("--results", required=True, help="result JSON of validate.py / train.py for this checkpoint")
    export.add_argument("--out", required=True, help="folder to write (created; see --overwrite)")
    export.add_argument("--tag", default=None, help="dataset tag, e.g. cifar100_lt_if100 (default: the checkpoint's)")
    export.add_argument("--repo-id", default=None,
                        help="Hub repo the card points at (default: timm-longtail/<model>.<tag>)")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.add_argument("--record", action="store_true",
                        help="also copy the card, config and weights to hub_cards/<model>.<tag>/ (do this for "
                             "weights you publish; pretrained=True loads them from there in a source checkout)")
    export.add_argument("--record-without-weights", action="store_true",
                        help="with --record: leave model.safetensors out of hub_cards/ (large weights: Hub only)")
    export.add_argument("--cards-dir", default=None, help="hub_cards/ folder (default: the source checkout's)")

    card = commands.add_parser("card", help="render README.md again for exported folders from their config.json, "
                                            "results.json and weights (the training runs are not needed)")
    card.add_argument("folders", nargs="+", help="exported or hub_cards/<model>.<tag>/ folders")
    card.add_argument("--cards-dir", default=None, help="hub_cards/ folder (default: the source checkout's)")

    figures = commands.add_parser("figures", help="measure the card's hardest-negative and calibration figures "
                                                  "on the test split (into <folder>/analysis/) and render the card")
    figures.add_argument("folder", help="an exported or hub_cards/<model>.<tag>/ folder with its weights")
    figures.add_argument("--data-dir", default=None, help="the dataset's folder (not needed for the demo set)")
    figures.add_argument("--device", default="cpu")
    figures.add_argument("--batch-size", type=int, default=256)
    figures.add_argument("--workers", type=int, default=2)
    figures.add_argument("--cards-dir", default=None, help="hub_cards/ folder (default: the source checkout's)")

    lossless = commands.add_parser("lossless", help="measure the folder's weights on the original pixels of some test "
                                                    "images and on the same rows of its data (analyze.py "
                                                    "lossless-subset) into results.json, and render the card")
    lossless.add_argument("folder", help="an exported or hub_cards/<model>.<tag>/ folder with its weights")
    lossless.add_argument("--data-dir", default=None, help="the dataset's folder (not needed for the demo set)")
    lossless.add_argument("--lossless-dir", required=True,
                          help="the originals, e.g. ../shared/data/cifar10-lossless-test-head")
    lossless.add_argument("--device", default="cpu")
    lossless.add_argument("--batch-size", type=int, default=256)
    lossless.add_argument("--workers", type=int, default=2)
    lossless.add_argument("--cards-dir", default=None, help="hub_cards/ folder (default: the source checkout's)")

    push = commands.add_parser("push", help="upload an export folder to the Hub as one commit")
    push.add_argument("folder", help="folder written by `export`")
    push.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub (created if missing)")
    push.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    push.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    push.add_argument("--commit-message", default=None)
    return parser


def _run(args: argparse.Namespace) -> None:
    """The chosen command; bad input raises UserInputError (``main`` prints it as one line)."""
    if args.command == "export":
        result = export_checkpoint(args.checkpoint, args.results, args.out, tag=args.tag, repo_id=args.repo_id,
                                   overwrite=args.overwrite, cards_dir=args.cards_dir)
        print(f"exported {result.repo_id} to {result.folder}")
        print(f"model.safetensors sha256 {result.sha256}")
        if args.record:
            recorded = record_card(result, args.cards_dir, weights=not args.record_without_weights)
            print(f"card recorded in {recorded}")
        print("once pushed (or committed under hub_cards/), publish it in timm_longtail/models/published_weights.json:")
        print(f"    from timm_longtail.models.weights import record_published; {table_entry(result)}")
    elif args.command == "card":
        for folder in args.folders:
            print(f"wrote {rewrite_card(folder, args.cards_dir)}")
    elif args.command == "figures":
        card = write_folder_figures(args.folder, args.data_dir, device=args.device, batch_size=args.batch_size,
                                    workers=args.workers, cards_dir=args.cards_dir)
        print(f"wrote {Path(args.folder) / 'analysis'} and {card}")
    elif args.command == "lossless":
        block = write_folder_lossless_subset(args.folder, args.data_dir, args.lossless_dir, device=args.device,
                                             batch_size=args.batch_size, workers=args.workers,
                                             cards_dir=args.cards_dir)
        for mode, row in block["result"].items():
            print(f"{mode}: on the original images {row['top1_lossless']:.2f}, on the same images of its data "
                  f"{row['top1_dataset']:.2f} (n = {row['n']:,})")
        print(f"wrote {Path(args.folder) / 'results.json'} and {Path(args.folder) / 'README.md'}")
    else:
        url = push_folder(args.folder, args.repo_id, revision=args.revision, private=args.private,
                          commit_message=args.commit_message)
        print(f"pushed {args.folder} to {args.repo_id}: {url}")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())

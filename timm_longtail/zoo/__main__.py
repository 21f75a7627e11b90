"""Command line: ``python -m timm_longtail.zoo {status,build,publish,park,table} [names]`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .._paths import SOURCE_ROOT
from ..errors import ShortErrorParser, UserInputError, run_command
from .loop import build
from .manifest import DEFAULT_MANIFEST, load_manifest
from .parking import park
from .publishing import publish
from .settings import BuildSettings, default_runs_dir
from .stages import entry_state
from .table import update_readme

EPILOG = """examples:
  python -m timm_longtail.zoo status
  git worktree add ../zoo-src HEAD && cd ../zoo-src
  nice python -m timm_longtail.zoo build ride_resnet32_3e.cifar10_lt_if100 --publish-to ../main
  (SIGINT/SIGTERM stops after the current training step; the same command resumes)
  python -m timm_longtail.zoo park --publish-to ../main   (before the runs folder is lost; commit zoo_parked/)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ShortErrorParser(prog="python -m timm_longtail.zoo", description="Build the model zoo.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("status", "where every entry stands"), ("build", "train, evaluate and publish entries"),
                       ("publish", "publish trained entries again from their runs (new card code); trains nothing"),
                       ("park", "copy unfinished stages' latest checkpoints into the checkout (zoo_parked/) for a "
                                "later build without this runs folder to resume"),
                       ("table", "write README's published-weights tables (from committed results)")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("names", nargs="*", help="manifest entries (<model>.<tag>; default: all)")
        sub.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
        sub.add_argument("--runs-dir", type=Path, default=None,
                         help="where runs live (default: $TIMM_LT_ZOO_RUNS or ../zoo-runs beside the checkout)")
        sub.add_argument("--publish-to", type=Path, default=SOURCE_ROOT,
                         help="checkout that receives hub_cards/, results/zoo/ and the published table")
        sub.add_argument("--json", action="store_true", help="print the machine-readable summary")
    commands.choices["table"].add_argument("--check", action="store_true",
                                           help="only check that README's tables are current (exit 1 if not)")
    for name in ("build", "publish"):
        commands.choices[name].add_argument(
            "--data-dir", action="append", default=[], metavar="DATASET=PATH",
            help="where a manifest dataset lies on this machine (repeat; default: the manifest's data_dirs)")
    build_cmd = commands.choices["build"]
    build_cmd.add_argument("--source-commit", default=None, metavar="SHA",
                           help="the commit this checkout is, where it has no git (a copy of the tree on another "
                                "machine); recorded in the cards as stated, not checked")
    build_cmd.add_argument("--device", default="cpu", help="train.py --device (cuda entries need a GPU)")
    build_cmd.add_argument("--include-gpu", action="store_true", help="also build the entries marked device: gpu")
    build_cmd.add_argument("--allow-dirty", action="store_true",
                           help="train from a checkout with uncommitted changes (recorded: weights.json says from_dirty_tree)")
    build_cmd.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                           help="extra train.py argument for every stage (repeat; e.g. --train-arg=--epochs=1)")
    return parser


def _data_dirs(manifest, pairs: List[str]) -> Dict[str, Path]:
    """``--data-dir DATASET=PATH`` values: each names a dataset of the manifest and an existing folder."""
    dirs = {}
    for pair in pairs:
        dataset, sep, path = pair.partition("=")
        if not sep or not dataset or not path:
            raise UserInputError(f"--data-dir takes DATASET=PATH, got {pair!r}")
        if dataset not in manifest.data_dirs:
            raise UserInputError(f"--data-dir {pair}: the manifest has no dataset {dataset!r} "
                                 f"(it has {', '.join(sorted(manifest.data_dirs))})")
        if not Path(path).is_dir():
            raise UserInputError(f"--data-dir {pair}: {path} is not a folder")
        dirs[dataset] = Path(path)
    return dirs


def _table(manifest, publish_to: Path, check: bool) -> int:
    readme = publish_to / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as error:
        raise UserInputError(f"cannot read {readme}: {error.strerror or error}") from None
    try:
        updated = update_readme(text, manifest, publish_to)
    except ValueError as error:
        raise UserInputError(f"{readme}: {error}") from None
    if check:
        if updated != text:
            print(f"{readme}: the zoo tables are out of date: run python -m timm_longtail.zoo table", file=sys.stderr)
            return 1
        print(f"{readme}: the zoo tables are current")
        return 0
    readme.write_text(updated, encoding="utf-8")
    print(f"wrote the zoo tables into {readme}")
    return 0


def _stage_summary(state: Dict, stage: str) -> str:
    """``experts:partial(15/200 ep, not parked)``: a stage's status, how far it got and, for an
    unpublished entry's run, whether ``park`` has copied it into the checkout (a lost runs folder
    otherwise loses it)."""
    status, epochs, parked = state["stages"][stage], state["epochs"][stage], state["parked_epochs"][stage]
    details = []
    if status in ("partial", "parked") and epochs:
        details.append(f"{epochs[0]}/{epochs[1]} ep")
    if status in ("partial", "done") and not state["published"]:
        trained = epochs[0] if epochs else None
        details.append("not parked" if parked is None else "parked" if parked == trained else f"parked at {parked}")
    return f"{stage}:{status}" + (f"({', '.join(details)})" if details else "")


def _run(args: argparse.Namespace) -> int:
    """The chosen command's exit status; bad input raises UserInputError (``main`` prints it as one line)."""
    manifest = load_manifest(args.manifest)
    entries = manifest.select(args.names)
    settings = BuildSettings(runs_dir=(args.runs_dir or default_runs_dir()).absolute(),
                             publish_to=args.publish_to.absolute(),
                             data_dirs=_data_dirs(manifest, getattr(args, "data_dir", [])),
                             source_commit=getattr(args, "source_commit", None))
    if args.command == "table":
        return _table(manifest, settings.publish_to, args.check)
    if args.command == "status":
        states = [entry_state(settings, manifest, e) for e in entries]
        if args.json:
            print(json.dumps(states, indent=2))
        else:
            for state in states:
                stages = " ".join(_stage_summary(state, stage) for stage in state["stages"])
                flag = "published" if state["published"] else ("waits for a GPU" if state["device"] == "gpu"
                                                               else "to build")
                print(f"{state['name']:<48} {flag:<16} {stages}")
        return 0
    if args.command == "park":
        parked = park(manifest, entries, settings)
        if args.json:
            print(json.dumps(parked, indent=2))
        if not parked:
            print("nothing to park: no unpublished entry has a trained or interrupted stage")
        return 0
    if args.command == "publish":
        outcomes = publish(manifest, entries, settings)
        if args.json:
            print(json.dumps([o.__dict__ for o in outcomes], indent=2))
        return 0 if all(o.status == "published" for o in outcomes) else 1
    settings.device, settings.include_gpu, settings.allow_dirty = args.device, args.include_gpu, args.allow_dirty
    settings.extra_args = list(args.train_arg)
    outcomes = build(manifest, entries, settings)
    if args.json:
        print(json.dumps([o.__dict__ for o in outcomes], indent=2))
    if any(o.status == "stopped" for o in outcomes):
        return 143
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_command(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())

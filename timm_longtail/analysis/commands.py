"""The analyses as ``analyze.py`` subcommands: which forward modes each needs, its result, its
table rows (printed, and the CSV) and its plot."""
from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from .._paths import portable_paths
from ..data import classes_by_count
from ..errors import ShortErrorParser, UserInputError
from ..evaluation import atomic_write_bytes, resolve_forward_modes
from ..evaluation.setup import EvalSetup, add_model_data_args, prepare_evaluation
from . import plots
from .agnostic import agnostic_accuracy
from .bias_variance import bias_variance
from .calibration import calibration
from .disagreement import expert_disagreement
from .expert_usage import expert_usage
from .groups import SPLITS
from .hardest_negative import hardest_negative
from .lossless import measure_lossless_subset
from .outputs import ModelOutputs, collect_outputs, expert_modes

__all__ = ["ANALYSES", "Analysis", "Evaluated", "add_analysis_args", "build_parser", "format_rows", "run_analysis"]


@dataclass(frozen=True)
class Evaluated:
    """What an analysis with its own ``evaluate`` measured (see :class:`Analysis`)."""

    result: Dict[str, Any]
    setup: EvalSetup
    modes: List[str]
    extra: Dict[str, Any]
    num_samples: int


@dataclass(frozen=True)
class Analysis:
    """One subcommand: ``modes`` picks the forward modes to run, ``compute`` turns the outputs into
    the result, ``table`` flattens it into rows and ``plot`` draws it (PNG bytes)."""

    help: str
    modes: Callable[[EvalSetup, argparse.Namespace], List[str]]
    compute: Optional[Callable[[ModelOutputs, EvalSetup, argparse.Namespace], Dict[str, Any]]]
    table: Callable[[Dict[str, Any]], List[Dict[str, Any]]]
    plot: Callable[[Dict[str, Any], str], bytes]
    per_mode: bool = True  # takes --forward-mode
    many_models: bool = False  # evaluates --checkpoints (several models), not one model
    # instead of modes + compute on one pass over the test split: evaluates on its own (several models,
    # two versions of the images) and returns the result, a set-up, the modes, extra keys and the images
    evaluate: Optional[Callable[[argparse.Namespace], Evaluated]] = None


def _requested_modes(setup: EvalSetup, args: argparse.Namespace) -> List[str]:
    return resolve_forward_modes(setup.model, args.forward_mode)


def _per_mode(function: Callable[..., Dict[str, Any]]) -> Callable[[ModelOutputs, EvalSetup, argparse.Namespace],
                                                                      Dict[str, Any]]:
    def compute(outputs: ModelOutputs, setup: EvalSetup, args: argparse.Namespace) -> Dict[str, Any]:
        return {mode: function(logits, outputs.targets, setup, args) for mode, logits in outputs.logits.items()}
    return compute


def _split_rows(by_mode: Dict[str, Dict[str, Any]], keys: List[str]) -> List[Dict[str, Any]]:
    return [dict(forward_mode=mode, split=split, **{k: (result["splits"][split] or {}).get(k) for k in ["n", *keys]})
            for mode, result in by_mode.items() for split in SPLITS]


def _usage_table(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    def row(group: str, usage: Dict[str, Any]) -> Dict[str, Any]:
        out = dict(group=group, n=usage["n"], mean_experts=usage["mean_experts"])
        for k, (share, accuracy) in enumerate(zip(usage["share"], usage["accuracy"]), start=1):
            out[f"share_{k}"], out[f"top1_{k}"] = share, None if accuracy is None else 100.0 * accuracy
        return out
    return ([row(split, result["splits"][split]) for split in SPLITS]
            + [row(f"class {c}", usage) for c, usage in enumerate(result["per_class"])])


def _bias_variance(args: argparse.Namespace) -> Evaluated:
    """Evaluate every ``--checkpoints`` model on the same test rows in one forward mode; refuse
    models that differ in architecture, classes or test split."""
    paths = list(args.checkpoints or [])
    if args.checkpoint:
        raise UserInputError("bias-variance takes the models as --checkpoints a.pth b.pth ..., not --checkpoint")
    if len(paths) < 2:
        raise UserInputError(f"bias-variance compares several models trained on resampled sets: pass at least 2 "
                             f"with --checkpoints (got {len(paths)})")
    first: EvalSetup | None = None
    targets = None
    predictions, models = [], []
    for path in paths:
        setup = prepare_evaluation(argparse.Namespace(**{**vars(args), "checkpoint": path}))
        modes = resolve_forward_modes(setup.model, args.forward_mode)
        if len(modes) != 1:
            raise UserInputError(f"bias-variance uses one forward mode per model; --forward-mode gave {modes}")
        if first is not None:
            for what, ours, theirs in (
                    ("model", setup.context["model"], first.context["model"]),
                    ("classes", setup.class_counts, first.class_counts),
                    ("test split", (setup.context["dataset"], setup.context["split"], len(setup.dataset)),
                     (first.context["dataset"], first.context["split"], len(first.dataset)))):
                if ours != theirs:
                    raise UserInputError(f"{path} differs from {paths[0]} in {what} ({ours} vs {theirs}): "
                                         f"bias and variance compare models of one recipe on one test split")
        outputs = collect_outputs(setup.model, setup.loader, modes, device=setup.device, amp=args.amp,
                                  channels_last=args.channels_last, num_classes=len(setup.class_counts))
        if targets is not None and not bool((outputs.targets == targets).all()):
            raise UserInputError(f"{path} was evaluated on other test images than {paths[0]}")
        first, targets = first or setup, outputs.targets
        predictions.append(outputs.logits[modes[0]].argmax(dim=-1))
        dataset = setup.checkpoint.get("dataset") if isinstance(setup.checkpoint.get("dataset"), dict) else {}
        models.append(dict(checkpoint=path, longtail_seed=dataset.get("seed"),
                           seed=(setup.checkpoint.get("recipe") or {}).get("seed")))
    assert first is not None and targets is not None
    result = bias_variance(torch.stack(predictions), targets, first.class_counts, first.shot_split)
    result["class_order"] = classes_by_count(first.class_counts)
    return Evaluated(result, first, modes, dict(models=models), sum(row["n"] for row in result["per_class"]))


def _lossless_subset(args: argparse.Namespace) -> Evaluated:
    """The model on ``--lossless-dir``'s original images and on the same rows of the dataset's split."""
    if args.num_samples is not None:
        raise UserInputError("lossless-subset scores every image of --lossless-dir: drop --num-samples")
    setup = prepare_evaluation(args)
    modes = resolve_forward_modes(setup.model, args.forward_mode)
    measured = measure_lossless_subset(setup.model, setup.dataset, args.lossless_dir, modes,
                                       batch_size=args.batch_size, workers=args.workers, device=setup.device,
                                       amp=args.amp, channels_last=args.channels_last)
    return Evaluated(measured["result"], setup, modes,
                     dict(lossless_dir=args.lossless_dir, row_range=measured["row_range"]), measured["num_samples"])


def _lossless_rows(by_mode: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [dict(forward_mode=mode, n=r["n"], top1_lossless=r["top1_lossless"], top1_dataset=r["top1_dataset"],
                 delta=r["delta"], delta_ci95_low=r["delta_ci95"][0], delta_ci95_high=r["delta_ci95"][1],
                 right_on_lossless_only=r["lossless_only"], right_on_dataset_only=r["dataset_only"])
            for mode, r in by_mode.items()]


ANALYSES: Dict[str, Analysis] = {
    "hardest-negative": Analysis(
        help="the hardest negative's softmax score per image: histogram and mean per split (RIDE Fig. 1b)",
        modes=_requested_modes,
        compute=_per_mode(lambda logits, targets, setup, args: hardest_negative(
            logits, targets, setup.class_counts, setup.shot_split, num_bins=args.num_bins)),
        table=lambda result: _split_rows(result, ["mean", "median", "share_above_half"]),
        plot=plots.plot_hardest_negative),
    "calibration": Analysis(
        help="ECE, MCE (equal-width bins), NLL and a reliability diagram, overall and per split",
        modes=_requested_modes,
        compute=_per_mode(lambda logits, targets, setup, args: calibration(
            logits, targets, setup.class_counts, setup.shot_split, num_bins=args.num_bins)),
        table=lambda result: _split_rows(result, ["ece", "mce", "nll", "accuracy", "mean_confidence"]),
        plot=plots.plot_calibration),
    "test-agnostic": Analysis(
        help="top-1 on SADE's forward / uniform / backward long-tailed test sets (ratios 50 ... 1/50)",
        modes=_requested_modes,
        compute=_per_mode(lambda logits, targets, setup, args: agnostic_accuracy(
            logits, targets, setup.class_counts, seed=args.sample_seed)),
        table=lambda result: [dict(forward_mode=mode, **row) for mode, r in result.items() for row in r["rows"]],
        plot=plots.plot_test_agnostic),
    "expert-usage": Analysis(
        help="routed mode: share of images of each split (and class) that used 1..E experts, and their top-1 "
             "(RIDE Fig. 6)",
        modes=lambda setup, args: resolve_forward_modes(setup.model, "routed"),
        compute=lambda outputs, setup, args: expert_usage(
            outputs.experts_used, outputs.logits["routed"], outputs.targets, int(setup.model.num_experts),
            setup.class_counts, setup.shot_split),
        table=_usage_table,
        plot=plots.plot_expert_usage, per_mode=False),
    "expert-disagreement": Analysis(
        help="mean pairwise KL between the experts' predictions and the share of images whose experts' top-1 "
             "differ, per split (NCL++ Fig. 2a)",
        modes=lambda setup, args: expert_modes(setup.model),
        compute=lambda outputs, setup, args: expert_disagreement(
            outputs.expert_logits(int(setup.model.num_experts)), outputs.targets, setup.class_counts,
            setup.shot_split),
        table=lambda result: [dict(split=s, **result["splits"][s]) for s in SPLITS],
        plot=plots.plot_disagreement, per_mode=False),
    "bias-variance": Analysis(
        help="bias and variance of the 0-1 loss over models trained on resampled long-tailed sets "
             "(--checkpoints a.pth b.pth ...; RIDE Fig. 1a)",
        modes=_requested_modes, compute=None,
        table=lambda result: [dict(group=s, **result["splits"][s]) for s in SPLITS]
        + [dict(group=f"class {c}", **row) for c, row in enumerate(result["per_class"])],
        plot=plots.plot_bias_variance, many_models=True, evaluate=_bias_variance),
    "lossless-subset": Analysis(
        help="top-1 on a folder of some test images' original lossless pixels (--lossless-dir, e.g. "
             "cifar10-lossless-test-head) and on the same rows of the dataset's own copy (JPEG for the shared "
             "CIFAR-10), image by image",
        modes=_requested_modes, compute=None, table=_lossless_rows, plot=plots.plot_lossless_subset,
        evaluate=_lossless_subset),
}


def _columns(rows: List[Dict[str, Any]]) -> List[str]:
    """Every key of the rows, in first-seen order (rows of one table may differ in keys)."""
    columns: List[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def _csv_bytes(rows: List[Dict[str, Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return text.getvalue().encode("utf-8")


def format_rows(rows: List[Dict[str, Any]], limit: int = 40) -> str:
    """A plain text table of the first ``limit`` rows (floats to 4 significant digits)."""
    if not rows:
        return ""
    columns = _columns(rows)

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
    table = [columns] + [[cell(row.get(c)) for c in columns] for row in rows[:limit]]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows in the CSV")
    return "\n".join(lines)


def run_analysis(name: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Run one analysis from parsed flags; print its table; write JSON, CSV and PNG with
    ``--results-file`` (all rendered first, each file landing by rename). Returns the JSON payload."""
    analysis = ANALYSES[name]
    if getattr(args, "num_bins", 1) < 1:
        raise UserInputError(f"--num-bins must be >= 1, got {args.num_bins}")
    extra: Dict[str, Any] = {}
    if analysis.evaluate is not None:
        evaluated = analysis.evaluate(args)
        result, setup, modes, extra, num_samples = (evaluated.result, evaluated.setup, evaluated.modes,
                                                    evaluated.extra, evaluated.num_samples)
    else:
        setup = prepare_evaluation(args)
        modes = analysis.modes(setup, args)
        outputs = collect_outputs(setup.model, setup.loader, modes, device=setup.device, amp=args.amp,
                                  channels_last=args.channels_last, num_classes=len(setup.class_counts))
        assert analysis.compute is not None
        result = analysis.compute(outputs, setup, args)
        num_samples = int(outputs.targets.numel())
    rows = analysis.table(result)
    payload = dict(analysis=name, **portable_paths(dict(setup.context, **extra)), num_samples=num_samples,
                   class_counts=setup.class_counts, class_counts_source=setup.class_counts_source,
                   shot_split=setup.shot_split.describe(), forward_modes=modes, result=result)
    print(f"{name}: {setup.title}, {payload['num_samples']} images; {setup.shot_split.describe()}")
    print(format_rows(rows))
    if args.results_file:
        results = Path(args.results_file)
        files = [(results, (json.dumps(payload, indent=2) + "\n").encode("utf-8")),
                 (results.with_suffix(".csv"), _csv_bytes(rows))]
        if not args.no_plot:
            files.append((results.with_suffix(".png"), analysis.plot(result, f"{name}: {setup.title}")))
        for path, data in files:  # all written before anything more is printed
            atomic_write_bytes(path, data)
        for path, _ in files:
            print(f"wrote {path}")
    return payload


def add_analysis_args(parser: argparse.ArgumentParser, name: str) -> None:
    """The flags of one subcommand besides the model/data ones."""
    analysis = ANALYSES[name]
    if analysis.many_models:
        parser.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT",
                            help="the models (train.py checkpoints, or .safetensors files with --model)")
        parser.add_argument("--forward-mode", default="ensemble", help="the one forward mode to compare")
    elif analysis.per_mode:
        parser.add_argument("--forward-mode", default="all",
                            help="ensemble | expert:<i> | routed | all (comma-separated for several)")
    if name in ("hardest-negative", "calibration"):
        parser.add_argument("--num-bins", type=int, default=20 if name == "hardest-negative" else 15,
                            help="equal-width bins over [0, 1]")
    if name == "lossless-subset":
        parser.add_argument("--lossless-dir", required=True,
                            help="folder of the original pixels of some rows of --split (parquet in the Hub layout; "
                                 "row i is the split's row <split>_index[i], else row i), e.g. "
                                 "../shared/data/cifar10-lossless-test-head")
    if name == "test-agnostic":
        parser.add_argument("--sample-seed", type=int, default=0, help="seed of the per-class subsampling (SADE: 0)")
    group = parser.add_argument_group("output")
    group.add_argument("--results-file", default=None,
                       help="JSON results; a CSV and a PNG are written beside it (same name)")
    group.add_argument("--no-plot", action="store_true", help="do not write the PNG")


def build_parser() -> argparse.ArgumentParser:
    """``analyze.py``'s command line: one subcommand per analysis, each with ``validate.py``'s model
    and data flags (here, not in the script, so that the zoo build runs the same commands)."""
    parser = ShortErrorParser(description="Analyses of timm-longtail models (RIDE, NCL++, SADE figures)")
    commands = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for name, analysis in ANALYSES.items():
        sub = commands.add_parser(name, help=analysis.help, description=analysis.help,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_model_data_args(sub)
        add_analysis_args(sub, name)
    return parser

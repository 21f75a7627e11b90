"""Experiment logging as timm's ``train.py`` does it: ``--log-wandb`` (Weights & Biases) and
``--log-tensorboard DIR`` (TensorBoard event files), both optional extras.

W&B takes timm's flags (``--log-wandb``, ``--wandb-project``, ``--wandb-tags``), its ``config`` (the
recipe) and its rows (``summary.csv``'s: ``epoch``, ``train_*``, ``eval_*``). The W&B run lives in the
run folder (``<run>/wandb``) in the mode W&B's own settings give: ``WANDB_MODE=offline`` keeps it
there without network or account, for ``wandb sync`` later. TensorBoard's events go to
``DIR/<run name>`` (one sub-folder per run, as ``tensorboard --logdir DIR`` lists them), written by
torch's ``SummaryWriter``. Only the primary process logs.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import shutil
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import OutputWriteError, UserInputError

__all__ = ["ExperimentLoggers", "FINAL_METRICS", "require_logger_packages"]

FINAL_METRICS = ("top1", "top5", "top1_many", "top1_medium", "top1_few")
"""The final test figures each logger receives, per forward mode (``final.json``'s row keys)."""


def require_logger_packages(args: argparse.Namespace) -> None:
    """A requested logger whose package is missing is a ``UserInputError`` before anything is built."""
    # Lazy: both are optional extras and heavy (wandb alone adds ~0.7 s to every train.py start here).
    if args.log_wandb and importlib.util.find_spec("wandb") is None:
        raise UserInputError("--log-wandb needs the wandb package: pip install 'timm-longtail[wandb]'")
    if args.log_tensorboard and importlib.util.find_spec("tensorboard") is None:  # torch's writer needs it
        raise UserInputError("--log-tensorboard needs the tensorboard package: pip install 'timm-longtail[tensorboard]'")


def _tag(key: str) -> str:
    """``train_loss`` -> ``train/loss``: TensorBoard groups its charts by the part before the slash."""
    return key.replace("_", "/", 1)


class ExperimentLoggers:
    """The run's W&B run and TensorBoard writer; either or both may be off (every method then does nothing)."""

    def __init__(self, wandb_run: Any = None, writer: Any = None):
        self.wandb_run, self.writer = wandb_run, writer

    @classmethod
    def open(cls, args: argparse.Namespace, output_dir: Path, run_name: str, recipe: Mapping[str, Any],
             start_epoch: int) -> "ExperimentLoggers":
        """Start the loggers ``args`` ask for. A W&B run that cannot start (no login, no network) is a
        ``UserInputError`` naming the offline mode, and leaves no ``wandb`` folder behind."""
        wandb_run = writer = None
        if args.log_wandb:
            wandb = importlib.import_module("wandb")
            wandb_dir = output_dir / "wandb"
            existed = wandb_dir.exists()
            try:
                wandb_run = wandb.init(project=args.wandb_project, name=run_name, config=dict(recipe),
                                       tags=args.wandb_tags, dir=str(output_dir))
            except wandb.errors.Error as error:
                if not existed:
                    shutil.rmtree(wandb_dir, ignore_errors=True)
                raise UserInputError(f"--log-wandb: W&B could not start ({error}); log in with `wandb login`, or "
                                     f"set WANDB_MODE=offline to keep the run in {wandb_dir} and `wandb sync` "
                                     f"it later") from None
        if args.log_tensorboard:
            log_dir = Path(args.log_tensorboard) / run_name
            from torch.utils.tensorboard import SummaryWriter  # lazy: the optional tensorboard package

            try:
                # purge_step: a resume hides the events of the epochs it trains again, as summary.csv drops them
                writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch or None)
                writer.add_text("recipe", "```yaml\n" + yaml.safe_dump(dict(recipe), sort_keys=False) + "```",
                                global_step=start_epoch)
                writer.flush()
            except OSError as error:
                if wandb_run is not None:
                    wandb_run.finish(exit_code=1)
                raise OutputWriteError(f"--log-tensorboard: could not write to {log_dir} "
                                       f"({error.strerror or error})") from None
        return cls(wandb_run, writer)

    def log_epoch(self, epoch: int, train_metrics: Mapping[str, float], eval_metrics: Mapping[str, float]) -> None:
        """One epoch's figures under ``summary.csv``'s names (timm's ``update_summary`` row)."""
        row: dict[str, float] = {"epoch": epoch}
        row.update({f"train_{key}": value for key, value in train_metrics.items()})
        row.update({f"eval_{key}": value for key, value in eval_metrics.items()})
        if self.wandb_run is not None:
            self.wandb_run.log(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(_tag(key), value, global_step=epoch)
            self.writer.flush()  # on disk as each epoch ends, as summary.csv

    def log_final(self, result: Mapping[str, Any], epoch: int) -> None:
        """The final test evaluation, per forward mode: the W&B run's summary, TensorBoard scalars at ``epoch``."""
        figures = {(mode, key): row[key] for mode, row in (result.get("modes") or {}).items()
                   for key in FINAL_METRICS if row.get(key) is not None}
        if self.wandb_run is not None and figures:
            self.wandb_run.summary.update({f"test_{mode}_{key}": value for (mode, key), value in figures.items()})
        if self.writer is not None:
            for (mode, key), value in figures.items():
                self.writer.add_scalar(f"test/{mode}/{key}", value, global_step=epoch)
            self.writer.flush()

    def close(self, exit_code: int) -> None:
        """Finish the W&B run (``exit_code`` non-zero marks it failed) and close the event file."""
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
            self.wandb_run = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

"""The run's checkpoints through timm's :class:`~timm.utils.CheckpointSaver`, in this package's format.

timm's saver keeps the best-metric bookkeeping (and its resume state, the ``saver`` key) and links the
best checkpoint to the last one; what it writes is ours. Ours, and why timm's does not fit: the payload
(``torch.save`` of ``args`` pickles an ``argparse.Namespace``, which ``torch.load(weights_only=True)``
refuses; ours holds the long-tail metadata: class counts, model kwargs, recipe, lineage), the atomic
write (a full disk becomes one clear error, the previous file unchanged), and the folder layout
(``last.pth`` and, with ``--select-by val``, ``best.pth``; no numbered history, which a long-tail run's
last-epoch rule never reads).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from timm.utils import CheckpointSaver
from torch import nn

from ..checkpoint import save_checkpoint
from ..errors import UserInputError

__all__ = ["LongTailCheckpointSaver"]


class LongTailCheckpointSaver(CheckpointSaver):
    """``save_checkpoint(completed_epochs, metric)`` writes ``last.pth``; with ``keep_best`` it also links
    ``best.pth`` to it whenever ``metric`` (held-out validation, higher is better) improves.

    The saver writes the model's weights and metadata, the training state it was given (optimizer,
    scheduler, AMP scaler, EMA weights) and its own bookkeeping; ``state`` is what the run adds (epoch,
    recipe, lineage...). It is passed per call, not fetched through a callback into the run: the saver
    keeps no reference back to the run (such a cycle kept the loader's worker processes alive until
    interpreter exit, which then waited on them forever).
    """

    def __init__(self, model: nn.Module, optimizer: Any, output_dir: Path, *, model_name: str,
                 class_counts: Sequence[int], class_names: Optional[Sequence[str]], model_kwargs: Mapping[str, Any],
                 scheduler: Any = None, amp_scaler: Any = None, model_ema: Any = None, keep_best: bool = False) -> None:
        super().__init__(model, optimizer, model_ema=model_ema, amp_scaler=amp_scaler, checkpoint_dir=str(output_dir),
                         decreasing=False, max_history=1)
        self.scheduler = scheduler
        self.extension = ".pth"
        self.model_name, self.class_counts, self.class_names = model_name, class_counts, class_names
        self.model_kwargs, self.keep_best = model_kwargs, keep_best
        self._state: Mapping[str, Any] = {}

    @property
    def last_path(self) -> Path:
        return Path(self.checkpoint_dir) / f"last{self.extension}"

    @property
    def best_path(self) -> Path:
        return Path(self.checkpoint_dir) / f"best{self.extension}"

    def save_checkpoint(self, epoch: int, metric: Optional[float] = None,
                        state: Optional[Mapping[str, Any]] = None) -> tuple:
        """``epoch`` counts completed epochs (what ``--resume`` starts from). Returns (best metric, its epoch)."""
        improved = metric is not None and (self.best_metric is None or self.cmp(metric, self.best_metric))
        if improved:  # before writing: the checkpoint's saver state then includes this epoch
            self.best_metric, self.best_epoch = metric, epoch
        self._state = state or {}
        try:
            self._save(self.last_path, epoch, metric)
        finally:
            self._state = {}
        if improved and self.keep_best:
            self._duplicate(str(self.last_path), str(self.best_path))
        return (None, None) if self.best_metric is None else (self.best_metric, self.best_epoch)

    def _save(self, save_path: Any, epoch: int, metric: Optional[float] = None) -> None:
        extra = dict(self._state, epoch=epoch, saver=self.state_dict(), metric=metric,
                     optimizer=self.optimizer.state_dict(),
                     scheduler=None if self.scheduler is None else self.scheduler.state_dict(),
                     scaler=None if self.amp_scaler is None else self.amp_scaler.state_dict())
        if self.model_ema is not None:
            extra["state_dict_ema"] = {k: v.detach().cpu() for k, v in self.model_ema.module.state_dict().items()}
        save_checkpoint(save_path, self.model, model_name=self.model_name, class_counts=self.class_counts,
                        class_names=self.class_names, model_kwargs=self.model_kwargs, extra=extra)

    def state_dict(self, epoch: Optional[int] = None, metric: Optional[float] = None) -> dict:
        """The best metric and its epoch (no numbered files: nothing pending)."""
        return dict(checkpoint_files=[], best_epoch=self.best_epoch, best_metric=self.best_metric,
                    pending=(None, None))

    def restore(self, checkpoint: Mapping[str, Any], source: str = "--resume") -> None:
        """Load the training state of the checkpoint resumed from and carry on its best-metric bookkeeping
        (also of one written before this saver, whose ``history`` held the best validation score with its
        0-based epoch). A state that does not fit this run is one clear error naming ``source``."""
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if self.scheduler is not None and checkpoint.get("scheduler") is not None:
                self.scheduler.load_state_dict(checkpoint["scheduler"])
            if self.amp_scaler is not None and checkpoint.get("scaler") is not None:
                self.amp_scaler.load_state_dict(checkpoint["scaler"])
            if self.model_ema is not None and checkpoint.get("state_dict_ema") is not None:
                self.model_ema.module.load_state_dict(checkpoint["state_dict_ema"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise UserInputError(f"{source}: training state does not fit this run "
                                 f"({str(error).splitlines()[0]})") from None
        if checkpoint.get("saver") is not None:
            self.load_state_dict(checkpoint["saver"])
            return
        history = checkpoint.get("history") or {}
        if history.get("best_metric") is not None:
            self.best_metric, self.best_epoch = history["best_metric"], int(history["best_epoch"]) + 1


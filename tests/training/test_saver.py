"""The run's checkpoints through timm's CheckpointSaver: our format, last/best files, resumable bookkeeping."""
from __future__ import annotations

import pytest
import torch
from timm.utils import CheckpointSaver, ModelEmaV3
from torch import nn

from timm_longtail.checkpoint import load_checkpoint
from timm_longtail.errors import UserInputError
from timm_longtail.training.saver import LongTailCheckpointSaver


class _Tiny(nn.Module):
    num_classes, num_experts = 3, 1

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)


def _saver(tmp_path, model, keep_best=True):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return LongTailCheckpointSaver(model, optimizer, tmp_path, model_name="tiny", class_counts=[5, 3, 1],
                                   class_names=["a", "b", "c"], model_kwargs={}, keep_best=keep_best)


def _save(saver, epoch, metric=None):
    return saver.save_checkpoint(epoch, metric, dict(note=f"after {epoch}"))


def test_last_and_best_in_our_format(tmp_path):
    model = _Tiny()
    saver = _saver(tmp_path, model)
    assert isinstance(saver, CheckpointSaver)
    weights = {}
    for epoch, score in enumerate([20.0, 60.0, 40.0], start=1):
        with torch.no_grad():
            model.fc.weight.fill_(float(epoch))
        weights[epoch] = model.fc.weight.clone()
        assert _save(saver, epoch, score) == (max([20.0, 60.0, 40.0][:epoch]), 1 if epoch == 1 else 2)
    last, best = load_checkpoint(tmp_path / "last.pth"), load_checkpoint(tmp_path / "best.pth")  # weights_only
    assert last["epoch"] == 3 and best["epoch"] == 2 and last["note"] == "after 3"
    assert torch.equal(last["state_dict"]["fc.weight"], weights[3])
    assert torch.equal(best["state_dict"]["fc.weight"], weights[2])
    assert last["class_counts"] == [5, 3, 1] and last["model_name"] == "tiny" and last["metric"] == 40.0
    assert last["saver"]["best_metric"] == 60.0 and last["saver"]["best_epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "last.pth"]  # no numbered history, no temp


def test_no_best_file_without_keep_best_or_a_metric(tmp_path):
    saver = _saver(tmp_path, _Tiny(), keep_best=False)
    _save(saver, 1, 50.0)
    assert not (tmp_path / "best.pth").exists() and saver.best_metric == 50.0
    other = _saver(tmp_path / "b", _Tiny())
    _save(other, 1)
    assert not (tmp_path / "b" / "best.pth").exists() and other.best_metric is None


def test_resume_keeps_the_best_so_far(tmp_path):
    saver = _saver(tmp_path, _Tiny())
    _save(saver, 1, 70.0)
    _save(saver, 2, 30.0)
    resumed = _saver(tmp_path, _Tiny())
    resumed.restore(load_checkpoint(tmp_path / "last.pth"))
    assert (resumed.best_metric, resumed.best_epoch) == (70.0, 1)
    _save(resumed, 3, 50.0)  # not better than epoch 1: best.pth stays epoch 1's
    assert load_checkpoint(tmp_path / "best.pth")["epoch"] == 1


def test_resume_from_a_checkpoint_written_before_the_saver(tmp_path):
    """Such checkpoints kept the best score in ``history`` with its 0-based epoch."""
    resumed = _saver(tmp_path, _Tiny())
    optimizer = resumed.optimizer.state_dict()
    resumed.restore(dict(epoch=5, optimizer=optimizer, history=dict(best_metric=61.5, best_epoch=3)))
    assert (resumed.best_metric, resumed.best_epoch) == (61.5, 4)
    fresh = _saver(tmp_path, _Tiny())
    fresh.restore(dict(epoch=5, optimizer=optimizer, history=dict(best_metric=None, best_epoch=None)))
    assert fresh.best_metric is None


def test_resume_restores_the_training_state_or_says_it_does_not_fit(tmp_path):
    model = _Tiny()
    saver = _saver(tmp_path, model)
    saver.model_ema = ModelEmaV3(model, decay=0.5)
    model.fc.weight.sum().backward()
    saver.optimizer.param_groups[0]["lr"] = 0.05
    saver.optimizer.step()
    _save(saver, 1)
    checkpoint = load_checkpoint(tmp_path / "last.pth")
    assert set(checkpoint) >= {"optimizer", "scheduler", "scaler", "state_dict_ema", "saver"}
    resumed = _saver(tmp_path, _Tiny())
    resumed.restore(checkpoint)
    assert resumed.optimizer.param_groups[0]["lr"] == 0.05
    other = LongTailCheckpointSaver(_Tiny(), torch.optim.Adam(_Tiny().parameters()), tmp_path / "o", model_name="tiny",
                                    class_counts=[5, 3, 1], class_names=None, model_kwargs={})
    with pytest.raises(UserInputError, match=r"^--resume x.pth: training state does not fit this run"):
        other.restore(dict(checkpoint, optimizer={"state": {}, "param_groups": []}), source="--resume x.pth")

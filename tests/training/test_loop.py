"""Pieces of the epoch loop."""
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

from timm_longtail.losses import DistillationLoss, RIDELoss
from timm_longtail.training.distributed import DistContext
from timm_longtail.precision import Precision
from timm_longtail.training.loop import StopFlag, copy_major, train_one_epoch
from timm_longtail.training.tasks import ExpertsObjective, StageTask


def test_copy_major_rows_are_copy_then_image():
    batch, copies = 3, 2
    images = torch.arange(batch * copies, dtype=torch.float32).view(batch, copies, 1, 1, 1)  # value = b*T + t
    target = torch.tensor([7, 8, 9])
    stacked, repeated = copy_major(images, target)
    assert stacked.shape == (batch * copies, 1, 1, 1)
    for t in range(copies):
        for b in range(batch):
            assert stacked[t * batch + b].item() == b * copies + t
    assert repeated.tolist() == [7, 8, 9, 7, 8, 9]
    plain = torch.zeros(4, 3, 8, 8)
    assert copy_major(plain, target)[0] is plain


def test_first_signal_sets_the_flag_instead_of_killing():
    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signum == signal.SIGTERM
        assert flag.agreed(DistContext(device=torch.device("cpu")))
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGTERM) != flag._handle


# ---- RIDE distillation objective vs. the reference code, computed by hand -------------------------

COUNTS = np.array([60.0, 30.0, 10.0])


def _log_softmax(v):
    v = v - v.max(axis=-1, keepdims=True)
    return v - np.log(np.exp(v).sum(axis=-1, keepdims=True))


def _kl_batchmean(target_logits, input_logits):
    """torch ``kl_div(log_softmax(input), softmax(target), reduction='batchmean')``."""
    log_q, log_p = _log_softmax(target_logits), _log_softmax(input_logits)
    return float((np.exp(log_q) * (log_q - log_p)).sum(-1).mean())


def _reference_objective_by_hand(z, y, teacher, reweight, diversity=-0.45, rf=0.05, s=30.0,
                                 kd_temperature=1.5, kd_factor=1.0):
    """RIDE's ``RIDELossWithDistill.forward`` (model/loss.py) transcribed loop by loop.

    The student's output is the mean of its (E, B, C) expert logits. For *every* student expert the
    whole RIDE loss (itself a sum over the experts of LDAM-CE + diversity KL) is added, and then
    the KD term of the mean logits: ``factor · T² · KL(softmax(t/T) || softmax(z̄/T))``.
    """
    margins = COUNTS ** -0.25
    margins = 0.5 * margins / margins.max()
    drw = (1 - 0.9999) / (1 - 0.9999 ** COUNTS)
    drw = drw / drw.sum() * len(COUNTS)
    weights = len(COUNTS) * COUNTS / COUNTS.sum() * rf + 1 - rf
    temps = weights / weights.max() if reweight else np.ones(len(COUNTS))
    output = z.mean(0)
    rows = np.arange(len(y))

    def ride_loss():
        loss = 0.0
        for logits_item in z:
            shifted = logits_item.copy()
            shifted[rows, y] -= s * margins[y]
            nll = -_log_softmax(shifted)[rows, y]
            w = drw[y] if reweight else np.ones(len(y))
            loss += (w * nll).sum() / w.sum()
            loss += diversity * temps.mean() ** 2 * _kl_batchmean(output / temps, logits_item / temps)
        return loss

    total = 0.0
    for _ in z:  # "for logits_item in extra_info['logits']" in RIDELossWithDistill
        total += ride_loss()
        total += kd_factor * kd_temperature ** 2 * _kl_batchmean(teacher / kd_temperature, output / kd_temperature)
    return total


class _FixedTeacher(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, images, mode=None):
        assert mode == "ensemble"
        return self.logits


@pytest.mark.parametrize("reweight", [False, True])
def test_reference_distillation_objective_matches_the_reference_code_by_hand(reweight):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 4, 3)) * 3  # E=3 student experts, B=4, C=3
    teacher = rng.normal(size=(4, 3)) * 3
    y = np.array([0, 2, 1, 2])
    expected = _reference_objective_by_hand(z, y, teacher, reweight)

    criterion = RIDELoss(COUNTS.tolist(), diversity_factor=-0.45, reweight_factor=0.05)
    criterion.set_reweighting(reweight)
    teacher_module = _FixedTeacher(torch.tensor(teacher, dtype=torch.float32))
    objective = ExpertsObjective(criterion, teacher_module,
                                 DistillationLoss(temperature=1.5, factor=1.0, on="reference"))
    outputs = {"logits": torch.tensor(z, dtype=torch.float32)}
    loss, components = objective(outputs, torch.zeros(4, 3, 2, 2), torch.tensor(y))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert float(sum(components.values())) == pytest.approx(loss.item(), rel=1e-5)  # terms add up to the loss

    # 'mean' is the same terms added once: the reference objective is E = 3 times it.
    once, _ = ExpertsObjective(criterion, teacher_module, DistillationLoss(1.5, 1.0, on="mean"))(
        outputs, torch.zeros(4, 3, 2, 2), torch.tensor(y))
    assert loss.item() == pytest.approx(3 * once.item(), rel=1e-6)


def _epoch(criterion, loader, log_interval=100, lr=0.1):
    torch.manual_seed(0)
    model = _ExpertsNet()
    return train_one_epoch(
        epoch=3, task=StageTask(model, ExpertsObjective(criterion), Precision("cpu")), loader=loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=lr), precision=Precision("cpu"),
        ctx=DistContext(device=torch.device("cpu")), stop=StopFlag(), log_interval=log_interval)


class _ExpertsNet(nn.Module):
    """Three linear 'experts' on flattened 2x2 images, shaped as a multi-expert model's training output."""

    def __init__(self):
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(12, 3) for _ in range(3))

    def forward(self, images):
        flat = images.flatten(1)
        return {"logits": torch.stack([expert(flat) for expert in self.experts])}


def _batches(steps, scale=1.0):
    generator = torch.Generator().manual_seed(0)
    return [(scale * torch.randn(4, 3, 2, 2, generator=generator), torch.tensor([0, 1, 2, 0]))
            for _ in range(steps)]


def test_a_training_step_reads_nothing_back_from_the_device(monkeypatch):
    """Loss and terms are summed on the device; the host reads them once per log interval (here
    only at the epoch's end): on a GPU no step waits for the device."""
    criterion, batches = RIDELoss(COUNTS.tolist(), diversity_factor=-0.45), _batches(6)
    reads = []
    for name in ("item", "tolist", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name):
            reads.append(_name)
            return _original(self, *args)
        monkeypatch.setattr(torch.Tensor, name, counted)
    result = _epoch(criterion, batches)
    assert result.steps == 6
    assert reads == ["tolist"]  # the epoch's one read of [loss, individual, diversity]
    assert set(result.metrics) >= {"loss", "individual", "diversity"}
    assert result.metrics["loss"] == pytest.approx(result.metrics["individual"] + result.metrics["diversity"],
                                                   rel=1e-5)


def test_epoch_metrics_are_the_means_of_the_steps_losses():
    criterion = RIDELoss(COUNTS.tolist(), diversity_factor=-0.45)
    batches = _batches(5)
    torch.manual_seed(0)
    model = _ExpertsNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for images, target in batches:  # the same steps by hand
        loss = criterion(model(images)["logits"], target)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result = _epoch(criterion, batches, log_interval=2)
    assert result.metrics["loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)


def test_a_non_finite_loss_stops_the_run_at_the_next_read():
    with pytest.raises(FloatingPointError, match="by epoch 3 step 2"):
        _epoch(RIDELoss(COUNTS.tolist()), _batches(6, scale=float("nan")), log_interval=2)


def test_a_float16_step_whose_loss_overflowed_is_skipped_by_the_scaler_not_a_stop():
    """As in timm's loop: the gradient scaler skips the update of a step whose (scaled) loss is inf/NaN
    and backs off its scale; the run goes on, the step stays out of the means and is counted."""
    from timm.utils import NativeScaler

    criterion, batches = RIDELoss(COUNTS.tolist(), diversity_factor=-0.45), _batches(5)
    bad = (torch.full_like(batches[0][0], float("inf")), batches[0][1])

    def run(steps):
        torch.manual_seed(0)
        model = _ExpertsNet()
        precision = Precision("cpu", torch.float16, NativeScaler(device="cpu"))
        result = train_one_epoch(
            epoch=1, task=StageTask(model, ExpertsObjective(criterion), precision), loader=steps,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1), precision=precision,
            ctx=DistContext(device=torch.device("cpu")), stop=StopFlag(), log_interval=2)
        return result, model, precision.scaler

    skipped, model, scaler = run([*batches[:2], bad, *batches[2:]])
    clean, clean_model, clean_scaler = run(batches)
    assert skipped.steps == 6 and skipped.metrics["skipped_steps"] == 1 and clean.metrics["skipped_steps"] == 0
    assert skipped.metrics["loss"] == pytest.approx(clean.metrics["loss"], rel=1e-6)  # the mean of the 5 updates
    for p, q in zip(model.parameters(), clean_model.parameters()):  # the overflowed step changed nothing
        torch.testing.assert_close(p, q)
    assert scaler.state_dict()["scale"] == clean_scaler.state_dict()["scale"] / 2  # backed off once
    with pytest.raises(FloatingPointError, match="every step's float16 loss overflowed"):
        run([bad, bad])

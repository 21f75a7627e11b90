"""DDP training on two CPU processes (gloo) under torchrun, through the probe ``ddp_probe.py``."""
import csv
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from timm_longtail.training import parse_args
from timm_longtail.training.distributed import DistContext
from timm_longtail.training.methods import check_args
from timm_longtail.training.assembly import build_data
from timm_longtail.training.runner import _Run
from timm_longtail.data.splits import dataset_targets
from conftest import REPO_ROOT


# ---- two CPU processes (gloo) under torchrun: what DDP training must guarantee --------------------
PROBE = Path(__file__).resolve().with_name("ddp_probe.py")
WORLD = 2
EPOCHS, STEPS = 2, 2  # DRW from epoch 1
# lr 1e-3: at the recipe's 0.1 the two summation orders (gloo's, the replay's) drift apart ~100x a step on the demo set
DDP_ARGS = ["--dataset", "demo", "--device", "cpu", "--workers", "0", "--batch-size", "8", "--eval-batch-size", "20",
            "--max-steps-per-epoch", str(STEPS), "--max-eval-samples", "40", "--log-interval", "1", "--seed", "1",
            "--warmup-epochs", "0", "--lr", "0.001", "--model", "ride_resnet32_2e", "--method", "ride",
            "--drw-epoch", "1", "--epochs", str(EPOCHS), "--eval-modes", "ensemble", "--val-split-fraction", "0.1"]


def torchrun(out: Path, *argv: str, delay: float = 0.0, stop_delay: float = 0.0, processes=None):
    """The probe under ``torchrun --nproc_per_node 2``; returns the finished process, or with ``processes``
    (the fixture, which ends it with the test) the running one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               TIMM_LT_PROBE_STEP_DELAY=str(delay), TIMM_LT_PROBE_STOP_DELAY=str(stop_delay))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_port",
               str(port), str(PROBE), str(out), *argv]
    if processes is not None:
        return processes.start(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    process.output = process.communicate(timeout=400)[0]
    return process


def rank_results(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def parameter_names(state: dict) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point() and "running_" not in k]


def replay_single_process(argv: list[str], ranks: list[dict]) -> tuple[dict, list[float]]:
    """One process trains on the ranks' recorded batches as DistributedDataParallel defines it: each
    rank's loss on its own shard (BatchNorm statistics per shard), gradients averaged, one optimizer
    step; BatchNorm running statistics follow rank 0 (DDP broadcasts rank 0's buffers each forward).
    Returns the final state and each epoch's loss averaged over steps and ranks. One thread, as each
    torchrun rank (OMP_NUM_THREADS=1): with more, CPU kernels (oneDNN on AVX-512) reduce in another
    order and four steps drift apart by ~1e-5."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _replay(argv, ranks)
    finally:
        torch.set_num_threads(threads)


def _replay(argv: list[str], ranks: list[dict]) -> tuple[dict, list[float]]:
    args = parse_args(argv)
    job = _Run(args, check_args(args), DistContext(torch.device("cpu")), "train.py")
    job.setup()
    model = job.model
    epoch_losses = []
    for epoch in range(EPOCHS):
        job.criterion.set_reweighting(job._reweighting(epoch))
        job.task.train()
        total = 0.0
        for step in range(STEPS):
            job.optimizer.zero_grad(set_to_none=True)
            for rank, seen in enumerate(ranks):
                images, target = seen["images"][epoch * STEPS + step], seen["targets"][epoch * STEPS + step]
                buffers = {k: v.clone() for k, v in model.named_buffers()} if rank else None
                loss = job.task(images, target)["loss"]
                (loss / WORLD).backward()
                total += float(loss.detach()) / WORLD
                if buffers is not None:
                    model.load_state_dict(buffers, strict=False)
            job.optimizer.step()
        job.scheduler.step(epoch + 1)
        epoch_losses.append(total / STEPS)
    return model.state_dict(), epoch_losses


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(out, *DDP_ARGS, "--output", str(out), "--experiment", "run")
    assert done.returncode == 0, done.output
    return out, done.output


@pytest.mark.slow
def test_ddp_ranks_agree_and_equal_one_process_on_the_global_batch(ddp_run):
    out, output = ddp_run
    ranks = rank_results(out)
    assert [r["code"] for r in ranks] == [0, 0]
    names = parameter_names(ranks[0]["state"])
    for name in names:  # the DDP wrapper: every rank ends with the same weights
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name
    reference, losses = replay_single_process(DDP_ARGS, ranks)
    for name, value in ranks[0]["state"].items():  # averaged gradients of both shards, not rank 0's alone
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6, msg=name)
    with open(out / "run" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == EPOCHS
    for row, loss in zip(rows, losses):  # the logged loss is the mean over ranks, not rank 0's
        assert float(row["train_loss"]) == pytest.approx(loss, rel=1e-5)
    assert all(row["eval_top1_balanced"] for row in rows)  # held-out validation every epoch
    assert output.count("epoch 1 done") == 1  # rank 0 alone logs
    assert torch.load(out / "run" / "last.pth", weights_only=True)["epoch"] == EPOCHS
    final = json.loads((out / "run" / "final.json").read_text())
    assert list(final["modes"]) == ["ensemble"] and final["modes"]["ensemble"]["num_samples"] == 40


@pytest.mark.slow
def test_ddp_each_rank_trains_on_its_own_shard(ddp_run):
    out, _ = ddp_run
    ranks = rank_results(out)
    args = parse_args(DDP_ARGS)
    data = build_data(args, check_args(args))
    labels = torch.as_tensor(dataset_targets(data.train))
    for epoch in range(EPOCHS):
        sampler = DistributedSampler(data.train, num_replicas=WORLD, rank=0, shuffle=True, seed=args.seed)
        sampler.set_epoch(epoch)
        shards = []
        for rank, seen in enumerate(ranks):
            sampler.rank = rank
            drawn = list(sampler)[:STEPS * 8]
            shards.append(set(drawn))
            recorded = torch.cat(seen["targets"][epoch * STEPS:(epoch + 1) * STEPS])
            assert torch.equal(recorded, labels[drawn]), (epoch, rank)
        assert not shards[0] & shards[1], epoch  # disjoint shards of one permutation


def _first_checkpoint(run, last: Path) -> Path:
    """Wait (5 min at most) until the torchrun ``run`` has written ``last``."""
    deadline = time.time() + 300
    while not last.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists(), run.communicate()[0] if run.poll() is not None else "no checkpoint in time"
    return last


@pytest.mark.slow
def test_ddp_a_signal_to_one_rank_stops_both_and_the_resume_is_exact(ddp_run, tmp_path, processes):
    out, _ = ddp_run
    # rank 0 slow to stop: rank 1 must wait for it, or torchrun ends rank 0 before it has said how to resume
    run = torchrun(tmp_path, *DDP_ARGS, "--output", str(tmp_path), "--experiment", "run", delay=1.0, stop_delay=3.0,
                   processes=processes)
    last = _first_checkpoint(run, tmp_path / "run" / "last.pth")
    os.kill(int((tmp_path / "rank1.pid").read_text()), signal.SIGTERM)  # rank 1 alone: rank 0 never hears it
    output = run.communicate(timeout=300)[0]
    # both ranks returned (no exception) with SIGTERM's status; torchrun then reports the failed workers
    stopped = rank_results(tmp_path)
    assert [r["code"] for r in stopped] == [128 + signal.SIGTERM] * WORLD, output
    assert abs(stopped[0]["left"] - stopped[1]["left"]) < 1.5  # rank 1 waited out rank 0's 3 s, not left first
    resume = re.findall(r"resume with: (.+)$", output, re.MULTILINE)
    assert [shlex.split(line) for line in resume] == [["torchrun", "--nproc_per_node", str(WORLD), "train.py",
                                                       "--resume", str(last)]], output  # rank 0 alone says it
    assert torch.load(last, weights_only=True)["epoch"] == 1  # epoch 0 kept, epoch 1 not finished
    resumed = torchrun(tmp_path, *shlex.split(resume[0])[4:])  # the probe in place of train.py: --resume alone
    assert resumed.returncode == 0, resumed.output
    uninterrupted, final = rank_results(out)[0]["state"], rank_results(tmp_path)[0]["state"]
    for name, value in uninterrupted.items():  # resume under DDP is exact: as if never stopped
        assert torch.equal(final[name], value), name


@pytest.mark.slow
def test_ddp_a_killed_rank_ends_the_run_and_the_checkpoint_resumes_exactly(ddp_run, tmp_path, processes):
    """SIGKILL (the OOM killer, a lost node) gives a rank no chance to stop cleanly: torchrun ends the others,
    and the last complete epoch's checkpoint, written by rename, is whole."""
    out, _ = ddp_run
    run = torchrun(tmp_path, *DDP_ARGS, "--output", str(tmp_path), "--experiment", "run", delay=1.0,
                   processes=processes)
    last = _first_checkpoint(run, tmp_path / "run" / "last.pth")
    os.kill(int((tmp_path / "rank1.pid").read_text()), signal.SIGKILL)
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 1 and "(SIGKILL)" in output, output  # torchrun's status for a failed worker
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    resumed = torchrun(tmp_path, "--resume", str(last))
    assert resumed.returncode == 0, resumed.output
    uninterrupted, final = rank_results(out)[0]["state"], rank_results(tmp_path)[0]["state"]
    for name, value in uninterrupted.items():
        assert torch.equal(final[name], value), name

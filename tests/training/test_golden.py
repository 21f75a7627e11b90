"""Golden training numerics: every method and stage, a few demo steps with a fixed seed, pinned.

A refactor of the training side must leave these unchanged. Each case trains through ``train.main``
(2 steps of batch 8) and is reduced to what the steps did: the change of every parameter and
BatchNorm statistic from the run's own initial state (``_Run.setup``, as the run builds it),
projected on fixed random directions, its norm, and the logged epoch losses. If a change of the
numerics is intended, the failure message prints the new row for ``GOLDEN``.

The cases train with ``--model-dtype float64``. In float32 the steps amplify the last-bit
differences between CPUs' kernels (oneDNN's convolutions and MKL's GEMMs pick their code by the
CPU: the pins once measured on an AMD EPYC failed on an Intel Xeon by up to 1.3e-3 of the norm);
in float64 the same kernel swaps moved the projection by at most 3.3e-7 of the norm
(MKL_CBWR=COMPATIBLE or MKL_ENABLE_INSTRUCTIONS=SSE4_2; ONEDNN_MAX_CPU_ISA=SSE41 or mkldnn off:
not at all) and ATen's AVX-512 kernels by 4.1e-6, inside the 1e-5 below. The losses still run in
float32 (the objectives cast to it) with ATen's AVX2 kernels, which tests/conftest.py selects on
every machine; ATen's default kernels would move it by up to 7e-2.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, load_script
from timm_longtail.checkpoint import load_checkpoint
from timm_longtail.training import parse_args
from timm_longtail.training.distributed import DistContext
from timm_longtail.training.methods import check_args
from timm_longtail.training.runner import _Run

QUICK = ["--dataset", "demo", "--device", "cpu", "--workers", "0", "--batch-size", "8", "--max-steps-per-epoch", "2",
         "--log-interval", "1", "--seed", "1", "--warmup-epochs", "0", "--no-final-eval", "--model-dtype", "float64"]
STAGE1 = ["--model", "ride_resnet32_3e", "--method", "ride", "--epochs", "2", "--max-steps-per-epoch", "1",
          "--drw-epoch", "1"]  # one step before DRW, one with it
CASES = {
    "ce": ["--model", "nclpp_resnet32", "--num-experts", "1", "--method", "ce", "--epochs", "1"],
    "bsce": ["--model", "nclpp_resnet32", "--num-experts", "1", "--method", "bsce", "--epochs", "1"],
    "ldam_drw": ["--model", "ride_resnet32_2e", "--num-experts", "1", "--model-kwargs", "{reduce_dimension: false}",
                 "--method", "ldam_drw", "--drw-epoch", "0", "--epochs", "1"],
    "ride": STAGE1,
    "router": ["--method", "ride", "--stage", "router", "--initial-checkpoint", "{ride}", "--epochs", "1",
               "--lr", "0.01"],
    "distillation": ["--model", "ride_resnet32_2e", "--method", "ride", "--epochs", "1", "--teacher", "{ride}",
                     "--distill-on", "experts"],
    "nclpp": ["--model", "nclpp_resnet32", "--method", "nclpp", "--num-experts", "2", "--num-copies", "2",
              "--epochs", "1"],
}
# case: (projection of the change on fixed random directions, its L2 norm, logged loss of each epoch)
GOLDEN = {  # measured in float64 at fd482f3 + --model-dtype on the 2-core Intel Xeon CPU
    "ce": (-3.1403286425527552, 18.709786041518594, [3.0504772663116455]),
    "bsce": (-2.2336503425661043, 18.666433310438574, [6.360761642456055]),
    "ldam_drw": (40.260750436572586, 24.99154003468433, [21.44154930114746]),
    "ride": (-1.7293304106364986, 47.41955031190428, [34.387081146240234, 92.26640319824219]),
    "router": (0.00010606843749683817, 0.00019071776984891234, [2.4884939193725586e-05]),
    "distillation": (-39.541201206891365, 109.87776319249232, [45.36579132080078]),
    "nclpp": (-15.554857558030662, 35.166393168025266, [76.48737335205078]),
}


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    """The pins' thread count (with the AVX2 kernels that tests/conftest.py selects): the float32 losses'
    sums split over another number of threads round differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_module():
    return load_script(REPO_ROOT / "train.py", "train_script_golden")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("golden")


def initial_state(argv: list[str]) -> dict[str, torch.Tensor]:
    args = parse_args(argv)
    job = _Run(args, check_args(args), DistContext(torch.device("cpu")), "train.py")
    job.setup()
    return {k: v.detach().clone() for k, v in job.model.state_dict().items()}


def fingerprint(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)
    projection = squares = 0.0
    for name in sorted(after):
        if not after[name].is_floating_point():
            continue
        change = after[name].double() - before[name].double()
        projection += float((change * torch.randn(change.shape, generator=generator, dtype=torch.float64)).sum())
        squares += float((change * change).sum())
    return projection, math.sqrt(squares)


def run_case(train_module, runs: Path, case: str) -> tuple[float, float, list[float]]:
    ride = runs / "ride" / "last.pth"
    if case in ("router", "distillation") and not ride.is_file():
        run_case(train_module, runs, "ride")
    argv = [*QUICK, *(a.replace("{ride}", str(ride)) for a in CASES[case])]
    before = initial_state(argv)
    assert train_module.main([*argv, "--output", str(runs), "--experiment", case]) == 0
    after = load_checkpoint(runs / case / "last.pth")["state_dict"]
    with open(runs / case / "summary.csv", newline="") as handle:
        losses = [float(row["train_loss"]) for row in csv.DictReader(handle)]
    return (*fingerprint(before, after), losses)


def assert_matches_pin(projection: float, norm: float, expected_projection: float, expected_norm: float,
                       measured: str = "") -> None:
    """The projection is a sum with cancellations: its tolerance scales with the norm, not with itself."""
    assert projection == pytest.approx(expected_projection, abs=1e-5 * expected_norm), measured
    assert norm == pytest.approx(expected_norm, rel=1e-6), measured


@pytest.mark.parametrize("case", list(CASES))
def test_training_numerics_are_unchanged(train_module, runs, case):
    projection, norm, losses = run_case(train_module, runs, case)
    measured = f'"{case}": ({projection!r}, {norm!r}, {losses!r}),'
    assert case in GOLDEN, f"no golden row; measured: {measured}"
    expected_projection, expected_norm, expected_losses = GOLDEN[case]
    assert norm > 0, case  # the steps changed something
    assert_matches_pin(projection, norm, expected_projection, expected_norm, measured)
    assert losses == pytest.approx(expected_losses, rel=1e-5), measured


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--opt-foreach", "true"], ["--opt-fused"], ["--torchcompile", "eager"]],
                         ids=["foreach", "fused", "torchcompile"])
def test_speed_flags_keep_the_numerics(train_module, runs, flags):
    """The optimizer kernels and torch.compile (dynamo with the eager backend here: inductor compiles for
    minutes on this CPU) change how the step runs, not what it computes."""
    from torch._dynamo.utils import counters

    argv = [*QUICK, *CASES["ce"], *flags]
    before = initial_state(argv)
    name = "ce-" + flags[0].strip("-")
    graphs = counters["stats"]["unique_graphs"]
    assert train_module.main([*argv, "--output", str(runs), "--experiment", name]) == 0
    checkpoint = load_checkpoint(runs / name / "last.pth")
    projection, norm = fingerprint(before, checkpoint["state_dict"])
    assert_matches_pin(projection, norm, *GOLDEN["ce"][:2])
    group = checkpoint["optimizer"]["param_groups"][0]  # the flag took effect
    if flags[0] == "--torchcompile":
        assert counters["stats"]["unique_graphs"] > graphs
    else:
        assert group["foreach" if flags[0] == "--opt-foreach" else "fused"] is True

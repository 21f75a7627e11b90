"""train.py end to end on the shipped demo set: every method and stage, resume, errors, signals, a full disk.

Runs are tiny (batch 8, 2 steps per epoch, 40 test images) and in-process through
``train.main(argv)`` to skip the import cost; the signal and full-disk runs go through real subprocesses.
"""
import csv
import hashlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, load_script
import timm
import torch

from timm_longtail.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from timm_longtail.data import build_dataset
from timm_longtail.models import measure_compute
from timm_longtail.training.config import PER_COMMAND_SETTINGS
from timm_longtail.training.runner import _Run

TRAIN = REPO_ROOT / "train.py"
QUICK = ["--dataset", "demo", "--device", "cpu", "--workers", "0", "--batch-size", "8", "--eval-batch-size", "20",
         "--max-steps-per-epoch", "2", "--max-eval-samples", "40", "--log-interval", "1", "--seed", "1",
         "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def train_module():
    return load_script(TRAIN, "train_script")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def train(train_module, runs: Path, name: str, *argv: str) -> Path:
    code = train_module.main([*QUICK, "--output", str(runs), "--experiment", name, *argv])
    assert code == 0
    return runs / name


def stopped_run(train_module, runs: Path, name: str, *argv: str) -> Path:
    """A run stopped by SIGINT (as Ctrl-C) right after its first epoch's checkpoint: what a user resumes."""
    end_epoch = _Run._end_epoch

    def end_then_stop(self, epoch, *rest):
        end_epoch(self, epoch, *rest)
        if epoch == 0:
            signal.raise_signal(signal.SIGINT)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Run, "_end_epoch", end_then_stop)
        code = train_module.main([*QUICK, "--output", str(runs), "--experiment", name, *argv])
    assert code == 128 + signal.SIGINT
    assert load_checkpoint(runs / name / "last.pth")["epoch"] == 1
    return runs / name


def printed_resume_command(text: str) -> list:
    """The command the stop or full-disk message says resumes the run."""
    found = re.findall(r"resume with: (.+)$", text, re.MULTILINE)
    assert found, text
    return shlex.split(found[-1])


def file_hashes(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def summary_rows(run: Path) -> list:
    with open(run / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def check_final(run: Path, modes: list) -> dict:
    final = json.loads((run / "final.json").read_text())
    assert list(final["modes"]) == modes
    for mode, row in final["modes"].items():
        for key in ("top1", "top5", "top1_many", "top1_medium", "top1_few", "macs_per_image", "flops_per_image",
                    "images_per_sec"):
            assert row[key] is not None, (mode, key)
        assert row["forward_mode"] == mode and row["num_samples"] == 40
        assert row["flops_per_image"] == 2 * row["macs_per_image"]
    for key in ("command", "seed", "wall_time_s", "train_images_per_sec", "epoch_time_s"):
        assert final[key] is not None
    assert final["seed"] == 1 and final["command"].startswith("train.py ")
    assert final["recipe"]["seed"] == 1 and final["recipe"]["epochs"] == final["epochs"]  # cards render from it
    assert final["selected_checkpoint"] == "last"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    return final


@pytest.fixture(scope="module")
def ride_stage1(train_module, runs):
    return train(train_module, runs, "ride", "--model", "ride_resnet32_3e", "--method", "ride", "--epochs", "2",
                 "--drw-epoch", "1")


@pytest.mark.parametrize("method, model, extra", [
    ("ce", "nclpp_resnet32", ["--num-experts", "1"]),
    ("bsce", "nclpp_resnet32", ["--num-experts", "1"]),
    ("ldam_drw", "ride_resnet32_2e", ["--num-experts", "1", "--model-kwargs", "{reduce_dimension: false}",
                                      "--drw-epoch", "0"]),
])
@pytest.mark.slow
def test_baselines(train_module, runs, method, model, extra):
    run = train(train_module, runs, method, "--model", model, "--method", method, "--epochs", "1",
                "--eval-modes", "ensemble", *extra)
    check_final(run, ["ensemble"])
    rows = summary_rows(run)
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0
    assert rows[0]["train_reweighting"] == ("1" if method == "ldam_drw" else "0")
    model_back, ckpt = build_model_from_checkpoint(run / "last.pth")
    assert ckpt["model_name"] == model and ckpt["recipe"]["method"] == method and ckpt["epoch"] == 1
    assert ckpt["class_counts"] == build_dataset("demo").class_counts
    if method == "ldam_drw":  # the unreduced plain ResNet-32 comes back from the checkpoint
        assert model_back.heads[0].fc.in_features == 64


@pytest.mark.slow
def test_ride_stage1_switches_drw_and_records_the_run(ride_stage1):
    rows = summary_rows(ride_stage1)
    assert [r["train_reweighting"] for r in rows] == ["0", "1"]
    assert "train_diversity" in rows[0] and float(rows[1]["train_images_per_sec"]) > 0
    final = check_final(ride_stage1, ["ensemble", "expert:0", "expert:1", "expert:2"])  # router untrained
    assert final["drw_epoch"] == 1
    ckpt = load_checkpoint(ride_stage1 / "last.pth")
    assert ckpt["reweighting"] is True and ckpt["recipe"]["drw_epoch"] == 1 and "optimizer" in ckpt
    assert (ride_stage1 / "args.yaml").is_file() and (ride_stage1 / "log.txt").read_text()


@pytest.mark.slow
def test_router_stage_trains_only_the_router(train_module, runs, ride_stage1):
    run = train(train_module, runs, "router", "--method", "ride", "--stage", "router", "--initial-checkpoint",
                str(ride_stage1 / "last.pth"), "--epochs", "1", "--lr", "0.01", "--sched", "cosine",
                "--eval-modes", "routed", "ensemble")
    final = check_final(run, ["routed", "ensemble"])
    hist = final["modes"]["routed"]["experts_used_hist"]
    assert len(hist) == 3 and sum(hist) == 40
    before = load_checkpoint(ride_stage1 / "last.pth")["state_dict"]
    model, ckpt = build_model_from_checkpoint(run / "last.pth")
    # routed compute follows the measured histogram: never above all experts plus every router
    # (a 1-epoch router may still send every sample to every expert)
    profile = measure_compute(model)
    routed = final["modes"]["routed"]["macs_per_image"]
    assert routed == pytest.approx(profile.macs_per_image("routed", hist))
    assert routed <= final["modes"]["ensemble"]["macs_per_image"] + sum(profile.router_macs)
    assert model.router_trained and ckpt["model_name"] == "ride_resnet32_3e"
    changed = {k.split(".")[0] for k, v in ckpt["state_dict"].items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])}
    assert changed == {"router"}  # experts' weights and BN statistics frozen


@pytest.mark.slow
@pytest.mark.parametrize("distill_on", ["experts", "reference"])
def test_ride_with_teacher_adds_distillation(train_module, runs, ride_stage1, distill_on):
    teacher_bn = "train" if distill_on == "reference" else "eval"  # the zoo's distill recipe: the reference's
    run = train(train_module, runs, f"distill_{distill_on}", "--model", "ride_resnet32_2e", "--method", "ride",
                "--epochs", "1", "--teacher", str(ride_stage1 / "last.pth"), "--distill-on", distill_on,
                "--teacher-bn", teacher_bn, "--eval-modes", "ensemble")
    rows = summary_rows(run)
    assert float(rows[0]["train_distill"]) != 0
    assert load_checkpoint(run / "last.pth")["recipe"]["teacher_bn"] == teacher_bn
    check_final(run, ["ensemble"])


@pytest.mark.slow
def test_nclpp_with_two_copies(train_module, runs):
    run = train(train_module, runs, "nclpp", "--model", "nclpp_resnet32", "--method", "nclpp", "--num-experts",
                "2", "--num-copies", "2", "--epochs", "1", "--eval-modes", "ensemble", "expert:1",
                "--amp", "--channels-last", "--model-ema")  # bfloat16 autocast on CPU
    rows = summary_rows(run)
    assert float(rows[0]["train_views_per_sec"]) > float(rows[0]["train_images_per_sec"])
    final = check_final(run, ["ensemble", "expert:1"])
    assert final["modes"]["ensemble"]["amp"] is True and list(final["ema"]["modes"]) == ["ensemble", "expert:1"]
    assert "state_dict_ema" in load_checkpoint(run / "last.pth")
    assert load_checkpoint(run / "last.pth")["dataset"]["num_copies"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_model_dtype_sets_weights_inputs_teacher_and_evaluation(train_module, runs, ride_stage1, dtype):
    """timm's --model-dtype: the student, its float32-trained teacher and the final evaluation all
    run in that dtype (a float32 input would stop the first convolution), and the checkpoint keeps it."""
    run = train(train_module, runs, f"dtype_{dtype}", "--model", "ride_resnet32_2e", "--method", "ride", "--epochs",
                "1", "--teacher", str(ride_stage1 / "last.pth"), "--eval-modes", "ensemble", "--model-dtype", dtype)
    state = load_checkpoint(run / "last.pth")["state_dict"]
    assert {value.dtype for value in state.values() if value.is_floating_point()} == {getattr(torch, dtype)}
    assert math.isfinite(float(summary_rows(run)[0]["train_distill"]))
    check_final(run, ["ensemble"])


@pytest.mark.slow
def test_held_out_validation_selects_without_the_test_set(train_module, runs, monkeypatch):
    from timm_longtail.training.runner import _Run

    scores = iter([20.0, 60.0, 40.0])  # held-out balanced top-1 of epochs 0, 1, 2: epoch 1 is the best
    validate = _Run._validate
    monkeypatch.setattr(_Run, "_validate", lambda self: (validate(self), {"top1_balanced": next(scores)})[1])
    run = train(train_module, runs, "selected", "--model", "nclpp_resnet32", "--method", "bsce", "--num-experts",
                "1", "--epochs", "3", "--val-split-fraction", "0.2", "--select-by", "val", "--eval-modes", "ensemble")
    final = json.loads((run / "final.json").read_text())
    assert final["selected_checkpoint"] == "best" and final["selected_epoch"] == 1  # neither the last nor epoch 0
    # round(0.2 n_c) of the demo counts 500, 299, 179, 107, 64, 38, 23, 13, 8, 5
    assert final["dataset"]["val_images"] == 100 + 60 + 36 + 21 + 13 + 8 + 5 + 3 + 2 + 1
    assert [float(r["eval_top1_balanced"]) for r in summary_rows(run)] == [20.0, 60.0, 40.0]
    best = load_checkpoint(run / "best.pth")
    assert best["epoch"] == 2 and load_checkpoint(run / "last.pth")["epoch"] == 3
    # the test figures are best.pth's: validate.py on it gives final.json's row, key for key
    validate = load_script(REPO_ROOT / "validate.py", "validate_for_selection")
    results = run / "validate_best.json"
    assert validate.main(["--checkpoint", str(run / "best.pth"), "--dataset", "demo", "--split", "test",
                          "--forward-mode", "ensemble", "--device", "cpu", "--workers", "0", "--num-samples", "40",
                          "--results-file", str(results)]) == 0
    row = json.loads(results.read_text())  # one forward mode: one row
    timing_and_source = {"images_per_sec", "eval_seconds", "class_counts_source", "data_dir", "pretrained"}
    assert set(final["modes"]["ensemble"]) - timing_and_source <= set(row)
    for key, value in final["modes"]["ensemble"].items():
        if key not in timing_and_source:
            assert row[key] == value, key
    assert sum(best["train_class_counts"]) == 1236 - 249


@pytest.mark.slow
def test_resume_continues_exactly(train_module, runs, caplog):
    """``--resume last.pth`` alone, as the stop message prints it, ends with the uninterrupted run's weights:
    the checkpoint's recipe, not the parser's defaults (batch 128, seed 42, warm-up 5, milestones 161 181...)."""
    common = ["--model", "ride_resnet32_2e", "--method", "ride", "--drw-epoch", "1", "--no-final-eval",
              "--decay-milestones", "2", "--epochs", "2"]
    straight = train(train_module, runs, "straight", *common)
    caplog.clear()
    half = stopped_run(train_module, runs, "half", *common)
    command = printed_resume_command(caplog.text)
    assert command == ["python", "train.py", "--resume", os.path.abspath(half / "last.pth")]
    assert train_module.main(command[2:]) == 0  # --resume <checkpoint>, no other flag
    a, b = load_checkpoint(straight / "last.pth"), load_checkpoint(half / "last.pth")
    assert b["epoch"] == 2 and b["num_updates"] == a["num_updates"] == 4
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    recipe = {k: v for k, v in b["recipe"].items() if k not in PER_COMMAND_SETTINGS}
    assert recipe == {k: v for k, v in a["recipe"].items() if k not in PER_COMMAND_SETTINGS}
    assert len(summary_rows(half)) == 2  # the resumed run appends to its own folder's summary
    # the recorded command reproduces the run (no --resume); the history keeps both commands
    assert "--resume" not in b["command"] and "--epochs 2" in b["command"] and b["command"] == a["command"].replace(
        "straight", "half")
    assert [("--resume" in c) for c in b["command_history"]] == [False, True]


@pytest.mark.parametrize("method", [
    ["--model", "ride_resnet32_2e", "--method", "ride", "--drw-epoch", "1"],  # ride_cifar
    ["--model", "nclpp_resnet32", "--method", "nclpp", "--num-copies", "2"],  # nclpp_cifar: AutoAugment, Cutout, copies
], ids=["ride", "nclpp_two_copies"])
@pytest.mark.slow
def test_device_augment_trains_and_resumes_exactly(train_module, runs, method):
    common = [*method, "--no-final-eval", "--decay-milestones", "2", "--device-augment", "--epochs", "2"]
    tag = method[3]
    straight = train(train_module, runs, f"device_straight_{tag}", *common)
    half = stopped_run(train_module, runs, f"device_half_{tag}", *common)
    assert train_module.main(["--resume", str(half / "last.pth")]) == 0
    a, b = load_checkpoint(straight / "last.pth"), load_checkpoint(half / "last.pth")
    assert a["recipe"]["device_augment"] is True and b["epoch"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # the flag is what changed the batches: the worker path gives other weights from the same seed
    workers = train(train_module, runs, f"worker_path_{tag}", *common[:-3], "--epochs", "2")
    stem = next(key for key in a["state_dict"] if key.endswith("conv1.weight"))
    assert not torch.equal(load_checkpoint(workers / "last.pth")["state_dict"][stem], a["state_dict"][stem])


def test_a_resume_that_changes_the_recipe_is_refused_unless_asked(train_module, runs, tmp_path, capsys):
    """A recipe flag given with --resume that differs from the checkpoint is one error line naming each
    difference, the run folder untouched; --resume-changes-recipe accepts it and the lineage and card show it."""
    common = ["--model", "ride_resnet32_2e", "--method", "ride", "--drw-epoch", "1", "--epochs", "2",
              "--decay-milestones", "2", "--eval-modes", "ensemble"]
    half = stopped_run(train_module, runs, "changed", *common)
    last = half / "last.pth"
    before = file_hashes(half)
    capsys.readouterr()
    changed = ["--lr", "0.05", "--seed", "2", "--batch-size", "4", "--drw-epoch", "0"]
    assert train_module.main(["--resume", str(last), *changed, "--workers", "0", "--log-interval", "2"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --resume {last} continues the recipe it records, and these flags change it: "
                   f"--drw-epoch 0 (checkpoint: 1), --lr 0.05 (checkpoint: 0.1), --batch-size 4 (checkpoint: 8), "
                   f"--seed 2 (checkpoint: 1); drop them to continue as recorded, or pass --resume-changes-recipe\n")
    assert file_hashes(half) == before  # nothing written
    # operational flags (workers, log interval) may be given anew; the recipe changes only when asked to
    assert train_module.main(["--resume", str(last), "--resume-changes-recipe", "--lr", "0.05", "--log-interval",
                              "2"]) == 0
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 2 and ckpt["recipe"]["lr"] == 0.05 and ckpt["recipe"]["log_interval"] == 2
    resumed = ckpt["lineage"][-1]
    assert resumed["role"] == "resumed" and resumed["epoch"] == 1 and resumed["recipe"]["lr"] == 0.1
    assert resumed["changed"] == {"lr": {"checkpoint": 0.1, "now": 0.05}}
    assert "--resume-changes-recipe" in ckpt["command"]  # no straight run reproduces it
    from timm_longtail.hub.__main__ import main as hub_main

    assert hub_main(["export", "--checkpoint", str(last), "--results", str(half / "final.json"), "--out",
                     str(tmp_path / "export"), "--repo-id", "someone/changed"]) == 0
    card = (tmp_path / "export" / "README.md").read_text()
    assert "### Stage 1: `ride_resnet32_2e`, experts stage before its recipe changed, 2 epochs" in card
    assert "Resumed from it with `--resume-changes-recipe`: `lr` 0.1 → 0.05." in card


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "stopped"])
def test_a_new_run_never_writes_into_a_folder_holding_a_run(train_module, runs, ride_stage1, capsys, finished):
    folder = ride_stage1 if finished else stopped_run(train_module, runs, "stopped_earlier", "--model",
                                                      "ride_resnet32_2e", "--method", "ride", "--epochs", "2")
    before = file_hashes(folder)
    capsys.readouterr()
    code = train_module.main([*QUICK, "--model", "nclpp_resnet32", "--method", "nclpp", "--epochs", "1",
                              "--output", str(runs), "--experiment", folder.name])
    held = "last.pth, final.json, summary.csv" if finished else "last.pth, summary.csv"
    assert code == 2 and capsys.readouterr().err == (
        f"error: {folder} already holds a run ({held}): continue it with --resume {folder / 'last.pth'}, or start a "
        f"new run with another --experiment\n")
    assert file_hashes(folder) == before  # byte for byte


@pytest.mark.slow
def test_longtail_seed_resamples_the_cifar_lt_draw(train_module, runs, shared_data):
    """RIDE's bias/variance study trains on independently drawn long-tailed sets: same counts,
    other images; seed 0 stays the standard set."""
    from timm_longtail.data import build_dataset as build

    cifar = shared_data / "cifar10"
    standard, other = (build("cifar10_lt", cifar, "train", imbalance_factor=100, seed=s) for s in (0, 7))
    assert standard.class_counts == other.class_counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert (standard.images[-50:] != other.images[-50:]).any()  # the tail class holds other images
    run = train(train_module, runs, "longtail_seed", "--model", "ride_resnet32_2e", "--method", "ride",
                "--dataset", "cifar10_lt", "--data-dir", str(cifar), "--longtail-seed", "7", "--epochs", "1",
                "--max-steps-per-epoch", "1", "--no-final-eval")
    checkpoint = load_checkpoint(run / "last.pth")
    assert checkpoint["dataset"]["seed"] == 7 and checkpoint["recipe"]["longtail_seed"] == 7
    assert checkpoint["recipe"]["seed"] == 1  # the training seed is another flag


@pytest.mark.slow
def test_bad_inputs_fail_before_training(train_module, runs, ride_stage1, tmp_path, capsys):
    nclpp_ckpt = tmp_path / "nclpp.pth"
    one_expert = tmp_path / "ride1e.pth"
    five_classes = tmp_path / "five.pth"
    counts = build_dataset("demo").class_counts
    save_checkpoint(nclpp_ckpt, timm.create_model("nclpp_resnet32", num_classes=10), model_name="nclpp_resnet32",
                    class_counts=counts, extra=dict(recipe=dict(method="nclpp", stage="experts"), optimizer={}))
    save_checkpoint(one_expert, timm.create_model("ride_resnet32_2e", num_classes=10, num_experts=1),
                    model_name="ride_resnet32_2e", class_counts=counts)
    save_checkpoint(five_classes, timm.create_model("ride_resnet32_6e", num_classes=5),
                    model_name="ride_resnet32_6e", class_counts=[5, 4, 3, 2, 1])
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: ride_resnet32_3e\nlearning_rate: 0.1\n")
    ride = ["--model", "ride_resnet32_3e", "--method", "ride"]
    cases = [
        (["--method", "mixup", "--model", "ride_resnet32_3e"], "unknown --method"),
        (["--method", "ride", "--model", "nclpp_resnet32"], "does not fit --method ride"),
        (["--method", "ride", "--stage", "router", "--initial-checkpoint", str(one_expert)], "has no router"),
        (["--method", "ride", "--stage", "router", "--initial-checkpoint", str(nclpp_ckpt)], "does not fit"),
        ([*ride, "--teacher", str(five_classes)], "--teacher has 5 classes"),
        ([*ride, "--resume", str(nclpp_ckpt)], "checkpoint of 'nclpp_resnet32'"),
        ([*ride, "--resume", str(corrupt)], "not a readable checkpoint"),
        ([*ride, "--initial-checkpoint", str(tmp_path / "missing.pth")], "not found"),
        (["--model", "ride_resnet32_9e", "--method", "ride"], "cannot create --model"),
        (["--config", str(bad_yaml)], "unknown key 'learning_rate'"),
        ([*ride, "--dataset", "cifar10_lt", "--data-dir", str(tmp_path / "nowhere")], ""),
        ([*ride, "--loss-kwargs", "{diversity: 1}"], "does not take option"),
        ([*ride, "--opt", "nosuchopt"], "--opt"),
        ([*ride, "--opt-fused", "--opt-foreach", "true"], "cannot be `True` together"),
        ([*ride, "--torchcompile", "nosuchbackend"], "--torchcompile nosuchbackend: Invalid backend"),
        ([*ride, "--device-augment", "--train-transform", "inat"], "no batched form of the 'inat'"),
        ([*ride, "--longtail-seed", "1"], "demo's training set is fixed"),
        ([*ride, "--amp", "--model-dtype", "float64"], "does not go with --model-dtype float64"),
    ]
    for argv, message in cases:
        name = f"bad{cases.index((argv, message))}"
        code = train_module.main([*QUICK, "--output", str(runs), "--experiment", name, *argv])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (argv, err)
        assert not (runs / name).exists()  # nothing written, nothing trained


def start_long_run(processes, folder: Path, *extra: str) -> tuple[subprocess.Popen, list[str], dict]:
    """A 50-epoch train.py subprocess into ``folder``, returned once its first last.pth is written (the
    ``processes`` fixture ends it if the test does not)."""
    # one thread: a busy CI machine starves OpenMP thread teams of a second process
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    argv = [sys.executable, str(TRAIN), *QUICK, "--model", "ride_resnet32_2e", "--method", "ride", "--epochs", "50",
            "--max-steps-per-epoch", "3", "--no-final-eval", "--workers", "1", *extra,
            "--output", str(folder.parent), "--experiment", folder.name]
    process = processes.start(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    wait_for_a_new_checkpoint(process, folder / "last.pth")
    return process, argv, env


def wait_for_a_new_checkpoint(process: subprocess.Popen, last: Path, after: int = -1) -> None:
    """Until ``last`` is replaced (its modification time passes ``after``), or the process ends."""
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if last.exists() and last.stat().st_mtime_ns > after:
            return
        time.sleep(0.2)
    assert last.exists() and last.stat().st_mtime_ns > after, (
        process.communicate()[0] if process.poll() is not None else "no checkpoint in time")


@pytest.mark.slow
def test_sigint_leaves_a_resumable_checkpoint_and_the_folder_is_locked_meanwhile(train_module, tmp_path, capsys,
                                                                                 processes):
    process, argv, env = start_long_run(processes, tmp_path / "stopped")
    last = tmp_path / "stopped" / "last.pth"
    args_yaml = (tmp_path / "stopped" / "args.yaml").read_text()
    capsys.readouterr()
    second = train_module.main([*QUICK, "--model", "ride_resnet32_2e", "--method", "ride", "--seed", "2", "--epochs",
                                "1", "--no-final-eval", "--output", str(tmp_path), "--experiment", "stopped"])
    err = capsys.readouterr().err.strip()
    assert second == 2 and err == (f"error: {tmp_path / 'stopped'} is in use by another training run: wait for it "
                                   f"to finish, or pass another --experiment/--output")
    assert (tmp_path / "stopped" / "args.yaml").read_text() == args_yaml  # the second run wrote nothing
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the loader worker gets it too
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, output
    assert "Traceback" not in output
    ckpt = load_checkpoint(last)
    assert 1 <= ckpt["epoch"] < 50
    # the printed command continues the same run (in the same folder, with the recorded recipe)
    command = printed_resume_command(output)
    assert command == ["python", "train.py", "--resume", str(last)]
    resumed = processes.start([sys.executable, *command[1:]], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    wait_for_a_new_checkpoint(resumed, last, after=last.stat().st_mtime_ns)
    os.killpg(resumed.pid, signal.SIGINT)
    output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 128 + signal.SIGINT, output
    again = load_checkpoint(last)
    assert again["epoch"] > ckpt["epoch"] and again["command"] == ckpt["command"]
    kept = [key for key in ckpt["recipe"] if key not in PER_COMMAND_SETTINGS]
    assert [again["recipe"][key] for key in kept] == [ckpt["recipe"][key] for key in kept]


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_keeps_the_checkpoint(tmp_path, processes):
    # batch 128: a step long enough (about a second here) that the second signal lands inside it
    process, _, _ = start_long_run(processes, tmp_path / "twice", "--batch-size", "128")
    last = tmp_path / "twice" / "last.pth"
    os.killpg(process.pid, signal.SIGTERM)
    seen = []
    for line in process.stdout:  # the first signal is taken: finish the step, then stop
        seen.append(line)
        if "received SIGTERM" in line:
            break
    os.killpg(process.pid, signal.SIGTERM)
    output = "".join(seen) + process.communicate(timeout=60)[0]
    assert process.returncode == -signal.SIGTERM, output  # the second one: SIGTERM's own default, at once
    assert load_checkpoint(last)["epoch"] >= 1  # whole (written by rename, never in place): resumable


@pytest.mark.slow
def test_sigkill_leaves_the_last_complete_epoch_whole(train_module, tmp_path, processes):
    """SIGKILL (the OOM killer) gives no chance to stop: every checkpoint is written aside and renamed into place,
    so last.pth is the last complete epoch's, whole, and the run resumes from it."""
    process, _, _ = start_long_run(processes, tmp_path / "killed")
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    last = tmp_path / "killed" / "last.pth"
    epoch = load_checkpoint(last)["epoch"]
    assert 1 <= epoch < 50
    assert train_module.main(["--resume", str(last), "--resume-changes-recipe", "--epochs", str(epoch + 1)]) == 0
    assert load_checkpoint(last)["epoch"] == epoch + 1


# The disk fills (RLIMIT_FSIZE: no file this process writes may grow past the limit; Python ignores SIGXFSZ, so a
# write past it fails with EFBIG, as one on a full disk fails with ENOSPC) at start, or after the first epoch.
FULL_DISK = """
import os, resource, sys
import train
from timm_longtail.training.runner import _Run

when, limit, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def fill(self=None):
    size = limit + (os.path.getsize(self.output_dir / "log.txt") if when == "log" else 0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

if when == "start":
    fill()
else:
    end_epoch = _Run._end_epoch
    def end_then_fill(self, epoch, *rest):
        end_epoch(self, epoch, *rest)
        if epoch == 0:
            fill(self)
    _Run._end_epoch = end_then_fill
sys.exit(train.main(argv))
"""
CHECKPOINT_DOES_NOT_FIT = 1_000_000  # bytes: args.yaml, log.txt and summary.csv fit, a 4 MB last.pth does not


def run_on_a_full_disk(when: str, limit: int, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", FULL_DISK, when, str(limit), *argv], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def one_error_line(stderr: str) -> str:
    """The run's one ``error:`` line, last on stderr after the progress log, without a traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]) and "Traceback" not in stderr, stderr
    return errors[0]


def assert_whole_log(path: Path) -> None:
    text = path.read_text()
    assert text.endswith("\n") and all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in text.splitlines()), text


FULL_DISK_RUN = ["--model", "ride_resnet32_2e", "--method", "ride", "--drw-epoch", "1", "--no-final-eval",
                 "--epochs", "2"]


@pytest.mark.slow
def test_a_full_disk_at_start_writes_nothing(tmp_path):
    done = run_on_a_full_disk("start", 64, *QUICK, *FULL_DISK_RUN, "--output", str(tmp_path), "--experiment", "full")
    assert done.returncode == 1, done.stderr
    assert one_error_line(done.stderr) == (f"error: could not write {tmp_path / 'full' / 'args.yaml'} (File too "
                                           f"large): no file was written")
    assert list(tmp_path.iterdir()) == []  # not even an empty args.yaml or log.txt, nor the folder


@pytest.mark.slow
def test_a_full_disk_at_the_first_checkpoint_leaves_whole_files_and_the_folder_free(train_module, tmp_path):
    argv = [*QUICK, *FULL_DISK_RUN, "--output", str(tmp_path), "--experiment", "full"]
    done = run_on_a_full_disk("start", CHECKPOINT_DOES_NOT_FIT, *argv)
    folder = tmp_path / "full"
    assert done.returncode == 1, done.stderr
    assert one_error_line(done.stderr) == (f"error: could not write {folder / 'last.pth'} (File too large): no file "
                                           f"was written")
    assert sorted(p.name for p in folder.iterdir()) == ["args.yaml", "log.txt"]  # no checkpoint, summary or temp
    assert yaml.safe_load((folder / "args.yaml").read_text())["experiment"] == "full"
    assert_whole_log(folder / "log.txt")
    assert train_module.main(argv) == 0  # no checkpoint, nothing to keep: the same command starts again there
    assert load_checkpoint(folder / "last.pth")["epoch"] == 2


@pytest.mark.parametrize("when, limit, failing", [
    ("epoch", CHECKPOINT_DOES_NOT_FIT, "could not write {folder}/last.pth (File too large): the previous file is "
                                       "unchanged"),
    ("log", 40, "could not append to {folder}/log.txt (File too large): its earlier lines are kept"),
], ids=["checkpoint", "log_line"])
@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_every_file_whole_and_resumable(train_module, tmp_path, when, limit, failing):
    folder = tmp_path / "full"
    done = run_on_a_full_disk(when, limit, *QUICK, *FULL_DISK_RUN, "--output", str(tmp_path), "--experiment", "full")
    assert done.returncode == 1, done.stderr
    last = folder / "last.pth"
    assert one_error_line(done.stderr) == (f"error: {failing.format(folder=folder)}; free space, then resume with: "
                                           f"python train.py --resume {last}")
    assert load_checkpoint(last)["epoch"] == 1  # the first epoch's, whole
    assert len(summary_rows(folder)) == 1 and yaml.safe_load((folder / "args.yaml").read_text())["epochs"] == 2
    assert_whole_log(folder / "log.txt")
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert train_module.main(printed_resume_command(done.stderr)[2:]) == 0  # and it resumes
    assert load_checkpoint(last)["epoch"] == 2 and len(summary_rows(folder)) == 2


def test_pretrained_backbone_seeds_trunk_and_every_expert(train_module, runs, tmp_path):
    donor = timm.create_model("nclpp_resnet32", num_classes=10, num_experts=1)
    plain = {}  # a plain-ResNet state dict: no trunk./experts.<i>. prefixes
    for key, value in donor.state_dict().items():
        for prefix in ("trunk.", "experts.0."):
            if key.startswith(prefix):
                plain[key[len(prefix):]] = value
    torch.save(plain, tmp_path / "plain.pth")
    run = train(train_module, runs, "backbone", "--model", "nclpp_resnet32", "--method", "nclpp", "--num-experts",
                "2", "--epochs", "1", "--lr", "0", "--weight-decay", "0", "--no-final-eval",
                "--pretrained-backbone", str(tmp_path / "plain.pth"))
    state = load_checkpoint(run / "last.pth")["state_dict"]
    weights = [k for k in plain if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    assert weights
    for key in weights:
        targets = [f"{p}{key}" for p in ("trunk.", "experts.0.", "experts.1.") if f"{p}{key}" in state]
        assert targets and all(torch.equal(state[t], plain[key]) for t in targets), key


@pytest.mark.parametrize("method,model,module", [("ldam_drw", "ride_resnet32_2e", "ldam"),
                                                 ("ride", "ride_resnet32_3e", "ride")])
def test_the_loss_receives_drw_weights_from_the_drw_epoch_on(train_module, tmp_path, monkeypatch, method, model,
                                                             module):
    """Observed at the loss's cross-entropy during a real run, not read from the flag that sets it."""
    import importlib
    from types import SimpleNamespace

    import torch.nn.functional as F

    from timm_longtail.losses import drw_class_weights

    seen = []

    def recording_cross_entropy(*args, **kwargs):
        seen.append(None if kwargs.get("weight") is None else kwargs["weight"].detach().clone())
        return F.cross_entropy(*args, **kwargs)

    target = importlib.import_module(f"timm_longtail.losses.{module}")
    proxy = SimpleNamespace(**{name: getattr(F, name) for name in dir(F) if not name.startswith("__")})
    proxy.cross_entropy = recording_cross_entropy
    monkeypatch.setattr(target, "F", proxy)
    extra = ["--model", model, "--method", method, "--epochs", "3", "--drw-epoch", "2", "--no-final-eval"]
    if method == "ldam_drw":
        extra += ["--num-experts", "1"]
    train(train_module, tmp_path, "drw", *extra)
    assert seen and len(seen) % 3 == 0  # the same number of calls in each of the 3 epochs (2 steps each)
    per_epoch = len(seen) // 3
    drw = drw_class_weights(build_dataset("demo").class_counts, 0.9999)
    for index, weight in enumerate(seen):
        if index < 2 * per_epoch:  # epochs 0 and 1: no re-weighting
            assert weight is None or torch.equal(weight, torch.ones_like(weight)), index
        else:  # from --drw-epoch 2 on: the effective-number weights
            assert weight is not None and torch.allclose(weight, drw), index


def test_grad_checkpointing_flag_reaches_the_model(train_module, runs, monkeypatch):
    import torch.utils.checkpoint

    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    train(train_module, runs, "checkpointed", "--model", "ride_resnet32_2e", "--method", "ride", "--epochs", "1",
          "--grad-checkpointing", "--no-final-eval")
    assert calls  # the stages were checkpointed during training

"""validate.py end to end on the shipped demo set, and its one-line errors."""
import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, load_script
import timm
import torch

from timm_longtail.checkpoint import save_checkpoint
from timm_longtail.data import build_dataset

VALIDATE = REPO_ROOT / "validate.py"
QUICK = ["--dataset", "demo", "--num-samples", "40", "-b", "20", "--workers", "0", "--no-progress", "--device", "cpu"]


def run_validate(*args: str, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """validate.py in a subprocess; ``max_file_bytes``: files it writes may not grow past that (RLIMIT_FSIZE:
    a write past it fails with EFBIG, as one on a full disk fails with ENOSPC)."""
    import resource

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="Agg")
    limit = None if max_file_bytes is None else (
        lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes)))
    return subprocess.run([sys.executable, str(VALIDATE), *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=300, preexec_fn=limit)


@pytest.fixture(scope="module")
def validate_module():
    return load_script(VALIDATE, "validate_script")


@pytest.mark.slow
def test_all_modes_end_to_end(tmp_path):
    results = tmp_path / "out" / "ride.json"
    done = run_validate("--model", "ride_resnet32_2e", "--forward-mode", "all", "--results-file", str(results), *QUICK)
    assert done.returncode == 0, done.stderr
    rows = json.loads(results.read_text())
    assert [r["forward_mode"] for r in rows] == ["ensemble", "expert:0", "expert:1"]  # untrained router: no routed
    for row in rows:
        for key in ("top1", "top5", "top1_many", "top1_medium", "top1_few", "macs_per_image", "flops_per_image",
                    "images_per_sec", "experts_used_hist", "shot_split", "class_counts_source", "model",
                    "checkpoint", "dataset", "forward_mode", "per_class_accuracy"):
            assert key in row
        assert 0 <= row["top1"] <= row["top5"] <= 100
        assert row["num_samples"] == 40 and row["class_counts_source"] == "dataset"
        assert row["class_counts"] == build_dataset("demo").class_counts
        assert row["flops_per_image"] == 2 * row["macs_per_image"]
        assert row["dataset"] == "demo" and row["model"] == "ride_resnet32_2e"
    assert rows[0]["macs_per_image"] > rows[1]["macs_per_image"] == rows[2]["macs_per_image"]
    with open(results.with_suffix(".csv"), newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["forward_mode"] for r in table] == ["ensemble", "expert:0", "expert:1"]
    assert float(table[0]["top1"]) == pytest.approx(rows[0]["top1"])
    assert results.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "expert:1" in done.stdout and "top1" in done.stdout
    assert sorted(p.name for p in results.parent.iterdir()) == ["ride.csv", "ride.json", "ride.png"]  # no temp files


@pytest.mark.slow
def test_checkpoint_routed_mode_uses_checkpoint_counts(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10)
    model.mark_router_trained()
    counts = [400, 300, 200, 150, 120, 90, 60, 30, 15, 8]  # differs from the demo's own counts
    checkpoint = save_checkpoint(tmp_path / "ride.pth", model, model_name="ride_resnet32_3e", class_counts=counts,
                                 class_names=build_dataset("demo").class_names)
    results = tmp_path / "routed.json"
    plot = tmp_path / "plots" / "per_class.png"
    done = run_validate("--checkpoint", str(checkpoint), "--forward-mode", "routed", "--results-file",
                        str(results), "--plot-file", str(plot), "--shot-rule", "ncl", *QUICK)
    assert done.returncode == 0, done.stderr
    row = json.loads(results.read_text())  # one mode: a single object
    assert row["forward_mode"] == "routed" and row["class_counts_source"] == "checkpoint"
    assert row["class_counts"] == counts
    # no absolute machine path in a results file: outside the checkout only the name is kept
    assert row["checkpoint"] == checkpoint.name and row["data_dir"] == "timm_longtail/data/demo"
    assert str(tmp_path) not in results.read_text() and str(REPO_ROOT) not in results.read_text()
    assert row["shot_split"]["inclusive"] is True
    hist = row["experts_used_hist"]
    assert len(hist) == 3 and sum(hist) == 40
    assert row["experts_used_mean"] == pytest.approx(sum((i + 1) * n for i, n in enumerate(hist)) / 40)
    assert plot.is_file() and not results.with_suffix(".csv").exists()


def _expect_error(validate_module, capsys, tmp_path, argv, message):
    results = tmp_path / "should-not-exist.json"
    code = validate_module.main([*argv, "--results-file", str(results)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert message in lines[0]
    assert not results.exists() and not results.with_suffix(".png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".should-not-exist")]
    return lines[0]


def test_bad_inputs_give_one_line_and_no_results(validate_module, capsys, tmp_path):
    quick = ["--num-samples", "20", "-b", "10", "--workers", "0", "--no-progress", "--device", "cpu"]
    _expect_error(validate_module, capsys, tmp_path,
                  ["--model", "ride_resnet32_2e", "--dataset", "cifar10_lt", "--data-dir", str(tmp_path / "nope"),
                   *quick], "data folder not found")
    _expect_error(validate_module, capsys, tmp_path,
                  ["--model", "ride_resnet32_2e", "--num-classes", "7", "--dataset", "demo", *quick],
                  "predicts 7 classes but demo has 10")
    _expect_error(validate_module, capsys, tmp_path,
                  ["--model", "ride_resnet32_2e", "--dataset", "demo", "--forward-mode", "sideways", *quick],
                  "unknown forward mode")
    _expect_error(validate_module, capsys, tmp_path,
                  ["--model", "ride_resnet32_2e", "--dataset", "demo", "--forward-mode", "routed", *quick],
                  "never trained")
    _expect_error(validate_module, capsys, tmp_path,
                  ["--model", "no_such_net", "--dataset", "demo", *quick], "no_such_net")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    _expect_error(validate_module, capsys, tmp_path, ["--checkpoint", str(corrupt), "--dataset", "demo", *quick],
                  "not a readable checkpoint")


def test_truncated_image_in_a_worker_is_one_line(validate_module, capsys, tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "val"):
        for c in range(3):
            folder = data / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (40 * c, 10 * i, 0)).save(folder / f"{i}.jpg")
    broken = data / "val" / "class_2" / "1.jpg"
    broken.write_bytes(broken.read_bytes()[:120])
    line = _expect_error(validate_module, capsys, tmp_path,
                         ["--model", "ride_resnet32_2e", "--dataset", "folder", "--data-dir", str(data),
                          "--split", "val", "--workers", "1", "--no-progress", "--device", "cpu"],
                         "truncated")
    assert str(broken) in line and "Traceback" not in line


def test_subprocess_error_exit_code(tmp_path):
    results = tmp_path / "r.json"
    done = run_validate("--model", "ride_resnet32_2e", "--dataset", "tiny_imagenet_lt", "--data-dir",
                        str(tmp_path / "missing"), "--results-file", str(results), "--no-progress")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: data folder not found") and "\n" not in done.stderr.strip()
    assert not results.exists()


@pytest.mark.slow
def test_a_results_write_that_fails_keeps_the_previous_results(tmp_path):
    results = tmp_path / "r.json"
    argv = ["--model", "ride_resnet32_2e", "--forward-mode", "ensemble", "--results-file", str(results), "--no-plot",
            *QUICK]
    assert run_validate(*argv).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    done = run_validate(*argv, max_file_bytes=100)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: could not write {results} (File too large): the previous file " \
                                           f"is unchanged", done.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # whole, and no temporary file


def test_safetensors_weights_for_a_named_model(validate_module, capsys, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("nclpp_resnet32", num_classes=10)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    results = tmp_path / "ncl.json"
    code = validate_module.main(["--model", "nclpp_resnet32", "--checkpoint", str(weights), "--forward-mode",
                                 "expert:1", "--results-file", str(results), "--no-plot", *QUICK])
    assert code == 0, capsys.readouterr().err
    row = json.loads(results.read_text())
    assert row["forward_mode"] == "expert:1" and row["class_counts_source"] == "dataset"
    assert not results.with_suffix(".png").exists()
    # the same weights in a model with another class count do not fit: one clear error
    _expect_error(validate_module, capsys, tmp_path, ["--model", "nclpp_resnet32", "--num-classes", "5",
                                                      "--checkpoint", str(weights), *QUICK], "does not fit")

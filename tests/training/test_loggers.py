"""train.py --log-wandb (W&B's offline mode, no network) and --log-tensorboard, read back from what they wrote.

The W&B run is read from its transaction log (``<run>/wandb/offline-run-*/run-*.wandb``): W&B's own
``Record`` messages (``wandb.proto``) in LevelDB's log format, which W&B has no public reader for.
"""
import csv
import json
import math
import sys
from pathlib import Path

import pytest
import wandb
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from conftest import REPO_ROOT, load_script

QUICK = ["--dataset", "demo", "--device", "cpu", "--workers", "0", "--batch-size", "8", "--eval-batch-size", "20",
         "--max-steps-per-epoch", "2", "--max-eval-samples", "40", "--log-interval", "1", "--seed", "1",
         "--warmup-epochs", "0", "--model", "ride_resnet32_2e", "--method", "ride", "--eval-modes", "ensemble"]
LOGGED = ["--epochs", "2", "--val-split-fraction", "0.2", "--select-by", "val", "--lr", "0.05"]


@pytest.fixture(scope="module")
def train_module():
    return load_script(REPO_ROOT / "train.py", "train_script")


def wandb_offline(patch: pytest.MonkeyPatch, folder: Path) -> None:
    """W&B without network or account (no API key anywhere), its settings and caches in ``folder``."""
    patch.setenv("WANDB_MODE", "offline")
    patch.delenv("WANDB_API_KEY", raising=False)
    patch.setenv("NETRC", str(folder / "no.netrc"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        patch.setenv(name, str(folder / "wandb-home"))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    wandb_offline(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def logged_run(train_module, tmp_path_factory):
    """One short run with both loggers, a held-out split (an accuracy every epoch) and the final test."""
    root = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as patch:
        wandb_offline(patch, root)
        code = train_module.main([*QUICK, *LOGGED, "--output", str(root / "runs"), "--experiment", "lt/ride",
                                  "--log-wandb", "--wandb-project", "lt-tests", "--wandb-tags", "demo", "quick",
                                  "--log-tensorboard", str(root / "tb")])
    assert code == 0
    return root


def summary_rows(run_dir: Path) -> list:
    with open(run_dir / "summary.csv", newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def wandb_records(path: Path):
    """The ``Record`` messages of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    32 KiB blocks of chunks, each with a 7-byte header (checksum, little-endian length, type: 1 whole,
    2 first, 3 middle, 4 last); a block's last bytes too few for a header are padding."""
    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    position, parts = 7, []
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        if kind == 0:  # zero-filled rest of the file
            break
        parts.append(data[position + 7:position + 7 + length])
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def read_wandb_run(run_dir: Path) -> dict:
    """{name, project, tags, config, history (one dict per wandb.log), summary} of the run folder's W&B run."""
    (log_file,) = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    run = dict(config={}, history=[], summary={})
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, project=record.run.project, tags=list(record.run.tags))
            run["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            run["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                   for item in record.history.item})
        elif kind == "summary":
            run["summary"].update({item.key: json.loads(item.value_json) for item in record.summary.update})
    return run


@pytest.mark.slow
def test_wandb_offline_run_folder_holds_each_epoch_and_the_recipe(logged_run):
    run_dir = logged_run / "runs" / "lt" / "ride"
    logged, rows = read_wandb_run(run_dir), summary_rows(run_dir)
    final = json.loads((run_dir / "final.json").read_text())
    assert (logged["name"], logged["project"], logged["tags"]) == ("lt/ride", "lt-tests", ["demo", "quick"])
    assert logged["config"]["lr"] == 0.05 and logged["config"]["method"] == "ride"
    assert logged["config"]["epochs"] == 2 and logged["config"]["val_split_fraction"] == 0.2
    assert {key: value for key, value in logged["config"].items() if key != "_wandb"} == final["recipe"]
    history = [{key: value for key, value in row.items() if not key.startswith("_")} for row in logged["history"]]
    assert [row["epoch"] for row in history] == [0, 1]
    for row, csv_row in zip(history, rows):  # summary.csv's row, as timm's update_summary logs it
        assert set(row) == set(csv_row)
        assert row == pytest.approx(csv_row)
        assert math.isfinite(row["train_loss"]) and row["train_lr"] > 0 and 0 <= row["eval_top1_balanced"] <= 100
    assert logged["summary"]["test_ensemble_top1"] == pytest.approx(final["modes"]["ensemble"]["top1"])
    assert logged["summary"]["test_ensemble_top1_few"] == pytest.approx(final["modes"]["ensemble"]["top1_few"])


def test_tensorboard_events_read_back(logged_run):
    run_dir = logged_run / "runs" / "lt" / "ride"
    rows = summary_rows(run_dir)
    final = json.loads((run_dir / "final.json").read_text())
    events = EventAccumulator(str(logged_run / "tb" / "lt" / "ride"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    for column in ("train_loss", "train_lr", "eval_top1_balanced", "train_diversity"):
        scalars = events.Scalars(column.replace("_", "/", 1))
        assert [event.step for event in scalars] == [0, 1]
        assert [event.value for event in scalars] == pytest.approx([row[column] for row in rows], rel=1e-6)
    (test_top1,) = events.Scalars("test/ensemble/top1")
    assert (test_top1.step, test_top1.value) == (1, pytest.approx(final["modes"]["ensemble"]["top1"], rel=1e-6))
    (text,) = events.Tensors("recipe/text_summary")
    recipe = yaml.safe_load(text.tensor_proto.string_val[0].decode().strip("`").removeprefix("yaml\n"))
    assert recipe == final["recipe"]


def test_a_resumed_run_goes_on_logging_where_it_stopped(train_module, tmp_path):
    """The loggers are operational settings: ``--resume`` alone keeps them, and the curves continue."""
    runs, board = tmp_path / "runs", tmp_path / "tb"
    common = [*QUICK, "--output", str(runs), "--no-final-eval"]
    assert train_module.main([*common, "--experiment", "r", "--epochs", "1", "--log-tensorboard", str(board)]) == 0
    assert train_module.main([*QUICK, "--resume", str(runs / "r" / "last.pth"), "--epochs", "2",
                              "--resume-changes-recipe"]) == 0
    events = EventAccumulator(str(board / "r"), size_guidance={"scalars": 0})
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [event.step for event in losses] == [0, 1]
    assert [event.value for event in losses] == pytest.approx([row["train_loss"] for row in summary_rows(runs / "r")],
                                                              rel=1e-6)


@pytest.mark.parametrize("flag, package", [(["--log-wandb"], "wandb"), (["--log-tensorboard", "tb"], "tensorboard")])
def test_a_missing_logger_package_is_one_error_line_before_anything(train_module, tmp_path, capsys, monkeypatch,
                                                                     flag, package):
    monkeypatch.setitem(sys.modules, package, None)  # what Python's import system reads as "not installed"
    code = train_module.main([*QUICK, "--epochs", "1", "--output", str(tmp_path / "runs"), *flag])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"error: {flag[0]} needs the {package} package: pip install 'timm-longtail[{package}]'"
    assert not (tmp_path / "runs").exists()


def test_wandb_that_cannot_start_is_one_error_line_and_leaves_no_folder(train_module, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")  # with no API key anywhere (wandb_offline)
    wandb.teardown()  # W&B reads its settings once per process: an earlier test's offline mode would stay
    code = train_module.main([*QUICK, "--epochs", "1", "--output", str(tmp_path / "runs"), "--experiment", "x",
                              "--log-wandb"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(lines) == 1 and "W&B could not start" in lines[0] and "WANDB_MODE=offline" in lines[0]
    assert not (tmp_path / "runs" / "x").exists()

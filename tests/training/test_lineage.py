"""train.py records where a checkpoint came from: a run started from ``--initial-checkpoint`` (RIDE's
router stage) or distilled from a ``--teacher`` writes a ``lineage`` into its checkpoints and
``final.json``, and the exported card lists every stage's recipe.

Tiny runs on the shipped demo set (2 steps per epoch, 40 test images), in-process through
``train.main``.
"""
import json

import pytest

from conftest import REPO_ROOT, load_script
from timm_longtail.checkpoint import load_checkpoint, run_lineage
from timm_longtail.hub.__main__ import main as hub_main

QUICK = ["--dataset", "demo", "--device", "cpu", "--workers", "0", "--batch-size", "8", "--eval-batch-size", "20",
         "--max-steps-per-epoch", "2", "--max-eval-samples", "40", "--log-interval", "1", "--seed", "1",
         "--warmup-epochs", "0", "--epochs", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """teacher (ride_resnet32_3e) -> distilled student (ride_resnet32_2e) -> the student's router stage."""
    train = load_script(REPO_ROOT / "train.py", "train_script_lineage")
    out = tmp_path_factory.mktemp("lineage_runs")

    def run(name, *argv):
        assert train.main([*QUICK, "--output", str(out), "--experiment", name, *argv]) == 0
        return out / name

    teacher = run("teacher", "--model", "ride_resnet32_3e", "--method", "ride", "--lr", "0.05", "--no-final-eval")
    student = run("student", "--model", "ride_resnet32_2e", "--method", "ride", "--teacher", str(teacher / "last.pth"),
                  "--no-final-eval")
    router = run("router", "--method", "ride", "--stage", "router", "--initial-checkpoint",
                 str(student / "last.pth"), "--lr", "0.01", "--sched", "cosine", "--eval-modes", "routed", "ensemble")
    return dict(out=out, teacher=teacher, student=student, router=router)


@pytest.mark.slow
def test_first_stage_has_an_empty_lineage(runs):
    assert load_checkpoint(runs["teacher"] / "last.pth")["lineage"] == []
    assert json.loads((runs["teacher"] / "final.json").read_text())["lineage"] == []


def test_distilled_run_records_its_teacher(runs):
    lineage = load_checkpoint(runs["student"] / "last.pth")["lineage"]
    assert [(e["role"], e["model_name"], e["stage"]) for e in lineage] == [("teacher", "ride_resnet32_3e", "experts")]
    assert lineage[0]["recipe"]["lr"] == 0.05 and lineage[0]["epoch"] == 1 and lineage[0]["version"]
    assert json.loads((runs["student"] / "final.json").read_text())["lineage"] == lineage


def test_router_stage_records_the_parent_lineage_then_the_parent(runs):
    ckpt = load_checkpoint(runs["router"] / "last.pth")
    final = json.loads((runs["router"] / "final.json").read_text())
    assert final["lineage"] == ckpt["lineage"]
    assert [(e["role"], e["model_name"], e["stage"]) for e in ckpt["lineage"]] == [
        ("teacher", "ride_resnet32_3e", "experts"), ("initial_checkpoint", "ride_resnet32_2e", "experts")]
    parent = ckpt["lineage"][1]
    assert parent["recipe"]["epochs"] == 1 and parent["recipe"]["teacher"] == "last.pth"  # paths made portable
    assert str(runs["out"]) not in json.dumps(final["lineage"])
    assert ckpt["recipe"]["stage"] == "router"


def test_resumed_run_keeps_the_recorded_lineage():
    recorded = [{"role": "initial_checkpoint", "model_name": "m", "recipe": {}}]
    assert run_lineage(resume={"lineage": recorded}, initial={"model_name": "other"}) == recorded


def test_router_card_shows_stage1_recipe_and_demo_export_is_refused(runs, tmp_path, capsys):
    router = runs["router"]
    argv = ["export", "--checkpoint", str(router / "last.pth"), "--results", str(router / "final.json"),
            "--out", str(tmp_path / "export")]
    assert hub_main(argv) == 2  # demo weights never go to timm-longtail/
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "demo set" in err and "Traceback" not in err
    assert not (tmp_path / "export").exists()
    assert hub_main([*argv, "--repo-id", "someone/ride-demo-router"]) == 0
    card = (tmp_path / "export" / "README.md").read_text()
    assert [line for line in card.splitlines() if line.startswith("### Stage")] == [
        "### Stage 1: teacher `ride_resnet32_3e`, experts stage, 1 epoch",
        "### Stage 2: `ride_resnet32_2e`, experts stage, 1 epoch",
        "### Stage 3: this checkpoint, router stage, 1 epoch"]
    assert "| `lr` | 0.05 |" in card.split("### Stage 2")[0]  # the teacher's recipe
    assert str(runs["out"]) not in card and str(REPO_ROOT) not in card

"""scripts/seed_spread.py: the spread of one recipe over seeds, and the runs it refuses to compare."""
import json

import pytest

from conftest import REPO_ROOT, load_script

COMMAND = ("train.py -c configs/ldam_drw_r32_cifar10lt.yaml --device cpu --epochs 40 --seed {seed} "
           "--output /somewhere/runs --experiment ldam40-s{seed}")


@pytest.fixture(scope="module")
def seed_spread():
    return load_script(REPO_ROOT / "scripts" / "seed_spread.py", "seed_spread")


def _run(root, seed, top1, many, medium, command=COMMAND):
    folder = root / f"ldam40-s{seed}"
    folder.mkdir()
    result = dict(top1=top1 + 1e-12, top5=97.0, top1_many=many, top1_medium=medium, top1_few=None)
    final = dict(seed=seed, command=command.format(seed=seed), epochs=40, train_time_s=1700.04,
                 train_images_per_sec=360.04, modes=dict(ensemble=result))
    (folder / "final.json").write_text(json.dumps(final))
    return folder


def test_spread_over_three_seeds(tmp_path, seed_spread, capsys):
    runs = [_run(tmp_path, 0, 72.11, 71.54, 74.40), _run(tmp_path, 1, 71.00, 70.00, 75.00),
            _run(tmp_path, 2, 73.00, 72.50, 73.00)]
    out = tmp_path / "spread.json"
    assert seed_spread.main([*map(str, runs), "--output", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["seeds"] == [0, 1, 2]
    assert [run["top1"] for run in summary["runs"]] == [72.11, 71.0, 73.0]  # rounded to 0.01, as the spread
    # hand-computed: mean 216.11 / 3 = 72.0367; sample std sqrt((0.0733^2 + 1.0367^2 + 0.9633^2) / 2) = 1.0020
    assert summary["spread"]["top1"] == dict(n=3, mean=72.04, std=1.0, min=71.0, max=73.0, range=2.0)
    assert summary["spread"]["top1_medium"]["range"] == 2.0
    assert "top1_few" not in summary["spread"]  # no few-shot class: nothing to spread
    assert summary["recipe_command"] == ("train.py -c configs/ldam_drw_r32_cifar10lt.yaml --device cpu --epochs 40 "
                                         "--output runs")  # per-run flags gone, machine path made portable
    assert "/somewhere" not in out.read_text()
    assert "mean 72.04, std 1.00" in capsys.readouterr().out


@pytest.mark.parametrize("second,message", [
    (dict(seed=1, command=COMMAND.replace("--epochs 40", "--epochs 200")), "differ in more than --seed"),
    (dict(seed=0), "share a seed"),
])
def test_refuses_runs_that_are_not_one_recipe(tmp_path, seed_spread, capsys, second, message):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = _run(tmp_path / "a", 0, 72.0, 71.0, 74.0)
    other = _run(tmp_path / "b", top1=71.0, many=70.0, medium=75.0, **second)
    out = tmp_path / "spread.json"
    assert seed_spread.main([str(first), str(other), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_refuses_an_unfinished_run(tmp_path, seed_spread, capsys):
    done, unfinished = _run(tmp_path, 0, 72.0, 71.0, 74.0), tmp_path / "ldam40-s1"
    unfinished.mkdir()
    assert seed_spread.main([str(done), str(unfinished), "--output", str(tmp_path / "s.json")]) == 2
    assert "no final.json" in capsys.readouterr().err

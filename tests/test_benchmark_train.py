"""scripts/benchmark_train.py: one real training step per variant/setting, JSON out."""
import json

import pytest

from conftest import REPO_ROOT, load_script


def test_benchmark_writes_a_rate_per_variant_and_setting(tmp_path, capsys):
    bench = load_script(REPO_ROOT / "scripts" / "benchmark_train.py", "benchmark_train")
    out = tmp_path / "bench.json"
    assert bench.main(["--variants", "ride_resnet32_2e", "nclpp_resnet32_t2", "--settings", "fp32",
                       "fp32_channels_last", "--batch-size", "4", "--steps", "1", "--warmup", "1",
                       "--device", "cpu", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == payload
    rows = {(r["variant"], r["setting"]): r["train_images_per_sec"] for r in payload["results"]}
    assert set(rows) == {(v, s) for v in ("ride_resnet32_2e", "nclpp_resnet32_t2")
                         for s in ("fp32", "fp32_channels_last")}
    assert all(rate > 0 for rate in rows.values())
    nclpp = [r for r in payload["results"] if r["variant"] == "nclpp_resnet32_t2"]
    assert all(r["copies"] == 2 and r["train_views_per_sec"] == pytest.approx(2 * r["train_images_per_sec"], abs=0.2) for r in nclpp)


@pytest.mark.slow
def test_pipelines_time_whole_training_runs_on_the_old_and_new_input_paths(tmp_path, capsys):
    bench = load_script(REPO_ROOT / "scripts" / "benchmark_train.py", "benchmark_train")
    out = tmp_path / "bench.json"
    assert bench.main(["--variants", "ride_resnet32_2e", "nclpp_resnet32_t2", "--settings", "--pipelines", "workers",
                       "device", "--pipeline-steps", "2", "--dataset", "demo", "--workers", "0", "--device", "cpu",
                       "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["results"] == []
    rows = {(r["variant"], r["pipeline"]): r for r in payload["pipelines"]}
    assert set(rows) == {(variant, pipeline) for variant in ("ride_resnet32_2e", "nclpp_resnet32_t2")
                         for pipeline in ("workers", "device")}
    for row in rows.values():
        assert row["train_images_per_sec"] > 0 and row["steps"] == 2
        assert row["step_time_ms"] > 0


def test_pipelines_need_data(tmp_path, capsys):
    bench = load_script(REPO_ROOT / "scripts" / "benchmark_train.py", "benchmark_train")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--pipelines", "workers", "--settings"])
    assert exit_info.value.code == 2
    assert "--pipelines needs --data-dir" in capsys.readouterr().err

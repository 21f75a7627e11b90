"""README's main job, end to end as a newcomer runs it (shortened: 2 training epochs)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.slow
def test_the_main_job_runs_end_to_end_into_its_own_folder(tmp_path):
    out = tmp_path / "main_job"
    env = dict(os.environ, PYTHON=sys.executable, EPOCHS="2", OUT=str(out), HF_HUB_OFFLINE="1")
    done = subprocess.run(["bash", "scripts/main_job.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f"== done: {out} =="
    results = {row["forward_mode"]: row for row in json.loads((out / "results.json").read_text())}
    assert {"ensemble", "routed", "expert:0"} <= set(results) and results["routed"]["experts_used_hist"]
    assert (out / "experts" / "last.pth").is_file() and (out / "router" / "last.pth").is_file()
    zoo = {row["forward_mode"]: row for row in json.loads((out / "zoo_results.json").read_text())}
    assert zoo["ensemble"]["top1"] > 50 and zoo["ensemble"]["pretrained"]  # the published weights


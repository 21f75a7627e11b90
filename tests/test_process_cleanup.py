"""The ``processes`` fixture (tests/conftest.py): a test that fails while its subprocess runs leaves no process
behind, its descendants included (a train.py's loader workers, the train.py a zoo build starts in a session
of its own)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO_ROOT

# a failing test whose process starts a grandchild in a session of its own, as the zoo build starts train.py
FAILING_TEST = textwrap.dedent('''
    import subprocess, sys
    from pathlib import Path

    SLEEPER = "import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; " \\
              "time.sleep(600)'], start_new_session=True); print(child.pid, flush=True); time.sleep(600)"

    def test_fails_while_its_process_runs(processes):
        process = processes.start([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, text=True)
        grandchild = process.stdout.readline().strip()
        Path(__file__).with_name("pids").write_text(f"{process.pid} {grandchild}")
        assert False, "a signal test that fails"
''')


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent (init, for an orphan) to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_failing_test_leaves_no_process_running(tmp_path):
    (tmp_path / "test_inner.py").write_text(FAILING_TEST)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT),
                                                        os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                           str(tmp_path / "test_inner.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "a signal test that fails" in done.stdout, done.stdout + done.stderr
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 2 and not [pid for pid in pids if _running(pid)]

"""Test set-up: offline Hub, torchvision importable before any test imports timm, and the processes a
test starts ended with it."""
import importlib.util
import os
import signal
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any, List

os.environ["HF_HUB_OFFLINE"] = "1"  # a Hub cache miss otherwise hangs ~45 s on this network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The pinned numerics (tests/training/test_golden.py: float64 weights, float32 losses and augmentation)
# were measured with ATen's AVX2 CPU kernels on 2 threads; its default (non-vector) kernels round the
# float32 parts differently and a few SGD steps drift past the pins. oneDNN is capped alike, so float32
# tests run the same convolution code on every machine. Read at torch's first CPU op, so set before
# anything runs; subprocesses inherit it.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

from timm_longtail._compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout under test: scripts, configs, hub_cards
CONFIG_DIR = REPO_ROOT / "configs"
SHARED_DATA = Path(os.environ.get("TIMM_LT_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
REQUIRE_DATA = os.environ.get("TIMM_LT_REQUIRE_DATA") == "1"  # CI sets it: its data missing is a failure


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (CI clones with it there); elsewhere its tests skip."""
    if not SHARED_DATA.is_dir():
        message = f"shared data not found at {SHARED_DATA}"
        if REQUIRE_DATA:
            pytest.fail(message + " (TIMM_LT_REQUIRE_DATA=1: the tests that need it must run)", pytrace=False)
        pytest.skip(message)
    return SHARED_DATA


def load_script(path: Path, name: str) -> ModuleType:
    """Import a repo script (train.py, validate.py, scripts/*.py) as a module, without running it."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_row_subset(folder: Path, images, labels, class_names, rows=None, split: str = "test") -> Path:
    """A folder like ``shared/data/cifar10-lossless-test-head``: ``images`` (uint8 HxWx3 arrays) as PNG
    in ``plain_text/<split>-00000-of-00001.parquet`` with ``label`` and, given ``rows``, ``<split>_index``."""
    import io

    import datasets
    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature, Value
    from PIL import Image

    def png(array) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    columns = {"img": [{"bytes": png(a), "path": f"{i}.png"} for i, a in enumerate(images)],
               "label": [int(label) for label in labels]}
    features = {"img": ImageFeature(), "label": ClassLabel(names=list(class_names))}
    if rows is not None:
        columns[f"{split}_index"], features[f"{split}_index"] = [int(r) for r in rows], Value("int64")
    path = folder / "plain_text" / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()  # it would write to the stderr a test reads
    try:
        Dataset.from_dict(columns, features=Features(features)).to_parquet(str(path))
    finally:
        datasets.enable_progress_bars()
    return folder


def _descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (Linux ``/proc``), children first."""
    found: List[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # exited meanwhile
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


class ProcessReaper:
    """Starts a test's processes, each in its own session; :meth:`close` kills whatever is still running,
    descendants included (a train.py's loader workers, the train.py a zoo build starts in a session of its
    own), and reaps it."""

    def __init__(self) -> None:
        self.started: List[subprocess.Popen] = []

    def start(self, argv: List[str], **popen_kwargs: Any) -> subprocess.Popen:
        popen_kwargs.setdefault("start_new_session", True)
        process = subprocess.Popen(argv, **popen_kwargs)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                family = [*_descendants(process.pid), process.pid]  # listed first: orphans cannot be found
                for pid in family:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # and anything of its session started meanwhile
                except (ProcessLookupError, PermissionError):
                    pass
            process.wait(timeout=60)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def processes():
    """``processes.start(argv, **Popen kwargs)``: a process that is killed and reaped when the test ends,
    passed or failed, so a failing signal test leaves no 50-epoch training behind."""
    reaper = ProcessReaper()
    yield reaper
    reaper.close()

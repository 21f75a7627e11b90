"""The zoo's commands on the shipped manifest without training anything: a published entry whose runs are
gone (status, park, build, publish) and an entry never trained, in a copy of the checkout's published files.

The quick lane's view of the build loop, stages, parking and publishing; ``test_build.py`` trains and
publishes end to end (slow)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from timm_longtail._paths import SOURCE_ROOT
from timm_longtail.files import sha256_of_file
from timm_longtail.models.weights import PUBLISHED_WEIGHTS_FILE
from timm_longtail.zoo.__main__ import main as zoo_main

PUBLISHED = "ride_resnet32_3e.cifar10_lt_if100"
NEVER_TRAINED = "ce_resnet32.cifar10_lt_if100"  # results-only baseline, absent from the copy


@pytest.fixture
def checkout_copy(tmp_path: Path) -> Path:
    """The published entry's committed folder and the published-weights table, as a checkout holds them."""
    copy = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "hub_cards" / PUBLISHED, copy / "hub_cards" / PUBLISHED)
    table = PUBLISHED_WEIGHTS_FILE.relative_to(SOURCE_ROOT)
    (copy / table).parent.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / table, copy / table)
    return copy


def _hashes(folder: Path) -> dict:
    return {p.name: sha256_of_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_commands_on_a_published_entry_whose_runs_are_gone(checkout_copy, tmp_path, capsys):
    runs = tmp_path / "runs"
    where = ["--runs-dir", str(runs), "--publish-to", str(checkout_copy)]
    folder = checkout_copy / "hub_cards" / PUBLISHED
    committed = _hashes(folder)

    assert zoo_main(["status", PUBLISHED, NEVER_TRAINED, *where]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == [PUBLISHED, "published"] and "experts:new router:new" in lines[0]
    assert lines[1].split()[:3] == [NEVER_TRAINED, "to", "build"] and "train:new" in lines[1]

    assert zoo_main(["park", PUBLISHED, NEVER_TRAINED, *where]) == 0
    out = capsys.readouterr().out
    assert f"{PUBLISHED}: published, nothing to park" in out and "nothing to park: no unpublished entry" in out
    assert not (checkout_copy / "zoo_parked").exists()

    assert zoo_main(["build", PUBLISHED, *where, "--allow-dirty", "--json"]) == 0
    out = capsys.readouterr().out
    assert f"{PUBLISHED}: published already, skipped" in out
    summary = json.loads((runs / "zoo_build.json").read_text())
    assert [(e["name"], e["status"]) for e in summary["entries"]] == [(PUBLISHED, "published")]

    assert zoo_main(["publish", PUBLISHED, NEVER_TRAINED, *where]) == 1  # the second is not trained
    out = capsys.readouterr().out
    assert f"{PUBLISHED}: its runs are gone: card rendered again" in out
    assert f"{NEVER_TRAINED}: not trained yet (stages train): build it first" in out
    assert _hashes(folder) == committed  # the committed card is what today's code renders; weights untouched

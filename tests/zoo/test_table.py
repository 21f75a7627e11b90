"""README's "How far to trust these numbers" tables, generated from committed files only."""
from __future__ import annotations

import json
import shutil

import yaml

from conftest import REPO_ROOT
from timm_longtail._paths import cards_dir
from timm_longtail.zoo import load_manifest
from timm_longtail.zoo.table import (BEGIN, END, RUNNING, TRUST_BEGIN, TRUST_END, render_tables, render_trust_tables,
                                     update_readme)

CARDS_DIR = cards_dir()  # the checkout's hub_cards/


def test_trust_tables_put_ours_beside_the_reference_code_and_the_paper(tmp_path):
    """Ours, the authors' code on this data and the paper per reference run, read from the committed
    files; a reference run not committed yet reads `running`, and its figures once it is."""
    manifest = load_manifest()
    reference = yaml.safe_load((CARDS_DIR / "reference.yaml").read_text())
    ldam, ride = reference["reference_runs"]["ldam_drw"], reference["reference_runs"]["ride_3e"]
    checkout = tmp_path / "checkout"
    for name in (ldam["file"], ldam["spread"]["file"], f"results/zoo/{ldam['ours']}.json",
                 f"hub_cards/{ride['ours']}/results.json"):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / name, checkout / name)
    ours_ride = json.loads((checkout / f"hub_cards/{ride['ours']}/results.json").read_text())
    ours_ldam = json.loads((checkout / f"results/zoo/{ldam['ours']}.json").read_text())["modes"]["ensemble"]["top1"]
    theirs_ldam = json.loads((checkout / ldam["file"]).read_text())["last_epoch"]["top1"]

    def rows(text):
        return {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
                for line in text.splitlines() if line.startswith(("| LDAM", "| RIDE"))}

    table = rows(render_trust_tables(manifest, checkout))
    assert table[("LDAM-DRW, CIFAR ResNet-32", "`ensemble`")][2:] == [
        f"{ours_ldam:.2f} (`{ldam['ours']}`)", f"{theirs_ldam:.2f}", f"{ldam['paper']['top1']:.2f} (Cao et al. 2019)"]
    for mode in ("ensemble", "routed"):
        assert table[("RIDE, CIFAR ResNet-32, 3 experts", f"`{mode}`")][2:] == [
            f"{ours_ride['modes'][mode]['top1']:.2f} (`{ride['ours']}`)", RUNNING,
            f"- ({ride['paper']['note']})"]
    (checkout / ride["file"]).write_text(json.dumps(dict(
        experts=dict(epochs_run=200, test=dict(top1=75.5)), router=dict(test=dict(top1=75.25)))))
    table = rows(render_trust_tables(manifest, checkout))
    assert [table[("RIDE, CIFAR ResNet-32, 3 experts", f"`{m}`")][3] for m in ("ensemble", "routed")] == [
        "75.50", "75.25"]


def test_trust_tables_list_every_published_weights_lossless_figures():
    text = render_trust_tables(load_manifest(), REPO_ROOT)
    header = next(line for line in text.splitlines() if line.startswith("| published weight"))
    assert "on the same images as JPEG" in header
    for entry in load_manifest().entries:
        block = json.loads(entry.results_path(REPO_ROOT).read_text()).get("lossless_subset") \
            if entry.publish == "weights" and entry.results_path(REPO_ROOT).is_file() else None
        for mode, row in ((block or {}).get("result") or {}).items():
            line = f"| `{entry.name}` | `{mode}` | {row['top1_lossless']:.2f} | {row['top1_dataset']:.2f} | "
            assert (line in text) == (mode in ("ensemble", "routed")), (entry.name, mode)


def test_readme_keeps_its_text_around_the_trust_tables():
    manifest = load_manifest()
    text = f"intro\n{BEGIN}\nold\n{END}\nmiddle\n{TRUST_BEGIN}\nold\n{TRUST_END}\nrest\n"
    assert update_readme(text, manifest, REPO_ROOT) == (
        f"intro\n{BEGIN}\n{render_tables(manifest, REPO_ROOT)}\n{END}\nmiddle\n"
        f"{TRUST_BEGIN}\n{render_trust_tables(manifest, REPO_ROOT)}\n{TRUST_END}\nrest\n")

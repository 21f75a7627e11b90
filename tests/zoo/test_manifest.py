"""The manifest's entries: where each one's committed results live (the build writes there, the README
table reads there)."""
from __future__ import annotations

from conftest import REPO_ROOT
from timm_longtail.zoo import load_manifest
from timm_longtail.zoo.publishing import BASELINE_ANALYSES


def test_results_live_beside_the_weights_or_in_results_zoo(tmp_path):
    manifest = load_manifest()
    weights = manifest.entry("ride_resnet32_3e.cifar10_lt_if100")
    baseline = manifest.entry("ldam_drw_resnet32.cifar10_lt_if100")
    assert (weights.publish, baseline.publish) == ("weights", "results")
    assert weights.results_path(tmp_path) == tmp_path / "hub_cards" / weights.name / "results.json"
    assert baseline.results_path(tmp_path) == tmp_path / "results" / "zoo" / f"{baseline.name}.json"
    assert weights.results_path(REPO_ROOT).is_file() and baseline.results_path(REPO_ROOT).is_file()


def test_a_baseline_s_analyses_live_in_results_analysis(tmp_path):
    baseline = load_manifest().entry("ldam_drw_resnet32.cifar10_lt_if100")
    path = baseline.analysis_path(tmp_path, "hardest-negative")
    assert path == tmp_path / "results" / "analysis" / f"{baseline.name}.hardest_negative.json"
    for analysis in BASELINE_ANALYSES:
        assert baseline.analysis_path(REPO_ROOT, analysis).is_file()

"""The zoo: the manifest of published weights and the resumable build that trains and exports them.

``python -m timm_longtail.zoo status`` shows where every entry stands; ``python -m timm_longtail.zoo
build [names]`` trains what is missing (resuming interrupted stages), evaluates every forward mode,
and writes ``hub_cards/<model>.<tag>/`` plus the published-weights table.
"""
from .build import BuildSettings, EntryOutcome, build, default_runs_dir, entry_state, stage_status
from .manifest import DEFAULT_MANIFEST, Entry, Manifest, Stage, load_manifest

__all__ = [
    "DEFAULT_MANIFEST", "BuildSettings", "Entry", "EntryOutcome", "Manifest", "Stage", "build", "default_runs_dir",
    "entry_state", "load_manifest", "stage_status",
]

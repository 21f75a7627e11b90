"""The zoo: the manifest of published weights and the resumable build that trains and exports them.

``python -m timm_longtail.zoo status`` shows where every entry stands; ``python -m timm_longtail.zoo
build [names]`` trains what is missing (resuming interrupted stages), evaluates every forward mode,
and writes ``hub_cards/<model>.<tag>/`` plus the published-weights table.
"""
from .loop import build
from .manifest import DEFAULT_MANIFEST, Entry, Manifest, Stage, load_manifest
from .parking import park
from .publishing import publish
from .settings import BuildSettings, EntryOutcome, default_runs_dir, is_published, stage_status
from .stages import entry_state

__all__ = [
    "DEFAULT_MANIFEST", "BuildSettings", "Entry", "EntryOutcome", "Manifest", "Stage", "build", "default_runs_dir",
    "entry_state", "is_published", "load_manifest", "park", "publish", "stage_status",
]

"""Publish trained weights on the Hugging Face Hub, and load them back.

``python -m timm_longtail.hub export`` turns a ``train.py`` checkpoint and its result JSON into a
folder with ``model.safetensors``, a timm ``config.json`` and a model card (``README.md``) rendered
from ``hub_cards/templates``; ``python -m timm_longtail.hub push`` uploads that folder as one commit.
Loading goes through timm itself (``create_model(name, pretrained=True)``, ``hf-hub:`` ids, local
folders), guarded by the checks in :mod:`timm_longtail.models.weights`, whose
:func:`record_published` adds an export to the published-weights table.
"""
from ..models.weights import (
    PUBLISHED_WEIGHTS, WeightsIntegrityError, check_pretrained_available, record_published, repo_root, verify_sha256,
)
from .card import build_card_context, read_front_matter, render_card
from .export import ExportResult, export_checkpoint, record_card, table_entry
from .load import load_local_folder
from .push import check_export_folder, push_folder
from .results import ModeResult, RunResults, load_results, parse_results

__all__ = [
    "PUBLISHED_WEIGHTS", "ExportResult", "ModeResult", "RunResults", "WeightsIntegrityError", "build_card_context",
    "check_export_folder", "check_pretrained_available", "export_checkpoint", "load_local_folder", "load_results",
    "parse_results", "push_folder", "read_front_matter", "record_card", "record_published", "render_card", "repo_root",
    "table_entry", "verify_sha256",
]

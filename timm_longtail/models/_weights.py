"""Which ``<model>.<tag>`` weights are published on the Hub, and their SHA-256."""
from __future__ import annotations

from typing import Any, Dict

from ..errors import UserInputError
from ._cfgs import HF_ORG

PUBLISHED_WEIGHTS: Dict[str, Dict[str, Any]] = {}
"""``"<model>.<tag>" -> {"sha256": ...}`` for every weight file pushed to the Hub."""


def check_pretrained_available(model_name: str, pretrained_cfg: Dict[str, Any]) -> None:
    """Fail clearly, before any download, when our Hub repo for this cfg has no weights yet."""
    if pretrained_cfg.get("file") or pretrained_cfg.get("state_dict") or pretrained_cfg.get("url"):
        return
    hub_id = pretrained_cfg.get("hf_hub_id") or ""
    if not hub_id.startswith(HF_ORG + "/"):
        return
    key = hub_id.split("/", 1)[1]
    if key not in PUBLISHED_WEIGHTS:
        raise UserInputError(
            f"no trained weights are published for {key} yet; train one with train.py, or load a "
            f"local file with pretrained_cfg_overlay=dict(file='model.safetensors')")

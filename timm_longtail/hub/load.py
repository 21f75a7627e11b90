"""Load an exported folder (``model.safetensors`` + ``config.json``) as a timm model."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

import timm
import torch.nn as nn

from ..errors import UserInputError
from ..models.weights import check_pretrained_available

__all__ = ["load_local_folder"]


def load_local_folder(path: Union[str, os.PathLike], **kwargs: Any) -> nn.Module:
    """Build the model ``config.json`` describes and load the folder's weights (SHA-256 checked).

    Equivalent to ``timm.create_model("local-dir:<path>", pretrained=True, **kwargs)`` with the
    folder checked first, so a missing, truncated or altered file gets one clear error.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserInputError(f"model folder not found: {folder}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserInputError(
            f"{folder} has no config.json: export the folder with `python -m timm_longtail.hub export`")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserInputError(f"{config_path} is not valid JSON: {error}") from None
    architecture = config.get("architecture") if isinstance(config, dict) else None
    if not architecture:
        raise UserInputError(f"{config_path} names no 'architecture'")
    if not timm.is_model(architecture):
        raise UserInputError(f"{config_path} names architecture {architecture!r}, which timm does not know")
    check_pretrained_available(architecture, dict(source="local-dir", file=str(folder)))
    return timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs)

"""Upload an exported folder to the Hugging Face Hub as one commit.

The token is whatever ``huggingface_hub`` resolves (``HF_TOKEN``, or ``hf auth login``); this
module only asks whether one exists and never reads, prints or stores it. The folder is checked
first (weights readable, SHA-256 as exported, card front matter valid YAML), so a tampered or
half-edited export is refused before anything is uploaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional, Union

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from .. import __version__
from ..errors import UserInputError
from ..models import HF_ORG
from ..models.weights import WEIGHTS_FILENAME, check_safetensors_readable, expected_sha256_from_config, verify_sha256
from .card import read_front_matter

__all__ = ["REQUIRED_FILES", "check_export_folder", "push_folder"]

REQUIRED_FILES = (WEIGHTS_FILENAME, "config.json", "README.md")


def check_export_folder(folder: Union[str, os.PathLike]) -> List[Path]:
    """Validate an export folder; returns the files to upload (every visible regular file, subfolders such as
    ``analysis/`` included, sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"export folder not found: {folder}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise UserInputError(f"{folder} is not an export folder: missing {', '.join(missing)} "
                             f"(create it with `python -m timm_longtail.hub export`)")
    check_safetensors_readable(folder / WEIGHTS_FILENAME)
    expected = expected_sha256_from_config(folder / "config.json")
    if not expected:
        raise UserInputError(f"{folder / 'config.json'} records no weights SHA-256: re-export the folder")
    verify_sha256(folder / WEIGHTS_FILENAME, expected, what="SHA-256 recorded in config.json at export")
    read_front_matter((folder / "README.md").read_text(encoding="utf-8"))
    return sorted(p for p in folder.rglob("*") if p.is_file()  # analysis/: the figures the card shows
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def push_folder(
        folder: Union[str, os.PathLike],
        repo_id: str,
        *,
        revision: Optional[str] = None,
        private: Optional[bool] = None,
        commit_message: Optional[str] = None,
) -> str:
    """Create ``repo_id`` if needed and upload the checked files in ONE commit (``HfApi.upload_folder``);
    returns the commit URL."""
    files = check_export_folder(folder)
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    exported_name = (config.get("timm_longtail") or {}).get("repo_name")
    if repo_id.partition("/")[0] == HF_ORG and exported_name and repo_id.partition("/")[2] != exported_name:
        raise UserInputError(f"{folder} holds {exported_name}: in the {HF_ORG} organisation it must go to "
                             f"{HF_ORG}/{exported_name}, where pretrained=True looks for it (not {repo_id})")
    if get_token() is None:
        raise UserInputError("no Hugging Face token found: set HF_TOKEN or run `hf auth login` first")
    api = HfApi(library_name="timm-longtail", library_version=__version__)
    message = commit_message or f"Upload {exported_name or Path(folder).name} (timm-longtail {__version__})"
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                                 commit_message=message,
                                 allow_patterns=[path.relative_to(folder).as_posix() for path in files])
    except HfHubHTTPError as error:
        raise UserInputError(f"push to {repo_id} failed: {str(error).splitlines()[0]}") from None
    return info.commit_url

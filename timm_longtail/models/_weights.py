"""Which ``<model>.<tag>`` weights are published on the Hub, and the checks run before loading them.

Every variant's default pretrained cfg points at ``timm-longtail/<model>.<tag>`` on the Hub, but a
repo only holds weights once a training run has been exported and pushed
(``python -m timm_longtail.hub export`` / ``push``). :data:`PUBLISHED_WEIGHTS` lists those that
have been, with the SHA-256 of their ``model.safetensors``; ``export`` prints the line to add here.

The model builders call :func:`check_pretrained_available` when ``pretrained=True``, before timm
loads anything, so that

* a variant with no published weights fails with one clear sentence instead of a Hub 404;
* weights from our Hub organisation are downloaded (into the ordinary Hub cache, where timm then
  finds them) and their SHA-256 checked against this table;
* a local ``pretrained_cfg_overlay=dict(file=...)`` that is missing, truncated, or differs from the
  SHA-256 its export folder's ``config.json`` records is reported as such.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..errors import UserInputError
from ._cfgs import HF_ORG

__all__ = [
    "PUBLISHED_WEIGHTS", "WEIGHTS_FILENAME", "WeightsIntegrityError", "check_pretrained_available",
    "check_safetensors_readable", "expected_sha256_from_config", "published_entry", "sha256_of_file",
    "split_hub_id", "verify_sha256",
]

WEIGHTS_FILENAME = "model.safetensors"
"""The weight file of every exported folder and Hub repo (timm looks for it first)."""

CONFIG_SHA256_KEY = "weights_sha256"
"""Key, under ``config.json``'s ``"timm_longtail"`` section, of the weight file's SHA-256."""

PUBLISHED_WEIGHTS: Dict[str, Dict[str, Any]] = {}
"""``"<model>.<tag>" -> {"sha256": <hex digest of model.safetensors>, ...}`` for every weight
file pushed to ``timm-longtail/<model>.<tag>``. Empty: no training run has been published yet."""

PathLike = Union[str, os.PathLike]


class WeightsIntegrityError(UserInputError):
    """A weight file whose SHA-256 differs from the published (or exported) one."""


def sha256_of_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (weight files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: PathLike, expected: str, what: Optional[str] = None) -> str:
    """Raise :class:`WeightsIntegrityError` unless ``path`` hashes to ``expected``; return the digest."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"weight file not found: {path}")
    actual = sha256_of_file(path)
    if actual != expected.lower():
        label = f" ({what})" if what else ""
        raise WeightsIntegrityError(
            f"SHA-256 mismatch for {path}{label}: expected {expected.lower()}, got {actual}. The file is "
            f"corrupt or was changed after export: delete it (for a Hub download, its folder in the Hub "
            f"cache) and download or export it again")
    return actual


def check_safetensors_readable(path: PathLike) -> None:
    """Raise :class:`UserInputError` unless ``path`` is a complete, readable safetensors file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"weight file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:  # checks the header covers the whole file
            handle.keys()
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise UserInputError(f"{path} is not a readable safetensors file (corrupt or truncated?): {error}") from None


def split_hub_id(hub_id: str) -> Tuple[str, Optional[str]]:
    """``"org/name@rev"`` -> ``("org/name", "rev")`` (timm's spelling of a pinned revision)."""
    repo_id, _, revision = hub_id.partition("@")
    return repo_id, revision or None


def published_entry(hub_id: str) -> Optional[Dict[str, Any]]:
    """The table entry of a Hub id in our organisation, or ``None`` (unpublished or not ours)."""
    repo_id, _ = split_hub_id(hub_id)
    org, _, name = repo_id.partition("/")
    return PUBLISHED_WEIGHTS.get(name) if org == HF_ORG else None


def expected_sha256_from_config(config_path: PathLike) -> Optional[str]:
    """The weight SHA-256 an export recorded in its ``config.json`` (``None`` when absent)."""
    try:
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    section = config.get("timm_longtail") if isinstance(config, dict) else None
    value = section.get(CONFIG_SHA256_KEY) if isinstance(section, dict) else None
    return value if isinstance(value, str) else None


def _check_local_file(path: Path) -> None:
    if path.is_dir():
        raise UserInputError(
            f"pretrained file {path} is a folder: pass the weight file inside it "
            f"(pretrained_cfg_overlay=dict(file='{path / WEIGHTS_FILENAME}')) or load the folder with "
            f"timm_longtail.hub.load_local_folder('{path}')")
    if not path.is_file():
        raise UserInputError(f"pretrained weight file not found: {path}")
    if path.suffix == ".safetensors":
        check_safetensors_readable(path)
    expected = expected_sha256_from_config(path.parent / "config.json") if path.name == WEIGHTS_FILENAME else None
    if expected:
        verify_sha256(path, expected, what=f"SHA-256 recorded in {path.parent / 'config.json'}")


def _check_local_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise UserInputError(f"model folder not found: {folder}")
    weights = folder / WEIGHTS_FILENAME
    if not weights.is_file():
        raise UserInputError(f"model folder {folder} has no {WEIGHTS_FILENAME}: export it with "
                             f"`python -m timm_longtail.hub export`")
    _check_local_file(weights)


def _download_and_verify(model_name: str, hub_id: str, filename: str, expected: Optional[str],
                         cache_dir: Optional[PathLike]) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    repo_id, revision = split_hub_id(hub_id)
    try:
        path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, library_name="timm-longtail")
    except LocalEntryNotFoundError:
        raise UserInputError(
            f"the weights of {model_name} ({repo_id}/{filename}) are not in the Hub cache and the Hub cannot "
            f"be reached (offline, or HF_HUB_OFFLINE=1): download them once while online, or pass "
            f"pretrained_cfg_overlay=dict(file=...)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise UserInputError(f"the Hub has no {filename} for {model_name} in {hub_id}: "
                             f"{str(error).splitlines()[0]}") from None
    except HfHubHTTPError as error:
        raise UserInputError(f"downloading {repo_id}/{filename} failed: {str(error).splitlines()[0]}") from None
    if filename.endswith(".safetensors"):
        check_safetensors_readable(path)
    if expected:
        verify_sha256(path, expected, what=f"published weights of {repo_id}")


def check_pretrained_available(
        model_name: str,
        pretrained_cfg: Mapping[str, Any],
        cache_dir: Optional[PathLike] = None,
) -> None:
    """Check, before timm loads ``pretrained=True`` weights, that they exist and are intact.

    Follows timm's choice of source (``state_dict`` > ``file`` > ``hf_hub_id`` > ``url``; a cfg
    loaded from ``hf-hub:``/``local-dir:`` uses that source). For our organisation's Hub repos the
    weights must be listed in :data:`PUBLISHED_WEIGHTS`; they are then downloaded into the Hub
    cache (timm reuses the cached file) and their SHA-256 checked. Any failure is one
    :class:`UserInputError` naming what to do.
    """
    source = pretrained_cfg.get("source") or ""
    if source == "local-dir":
        _check_local_folder(Path(pretrained_cfg.get("file") or ""))
        return
    if source != "hf-hub":
        if pretrained_cfg.get("state_dict") is not None:
            return
        if pretrained_cfg.get("file"):
            _check_local_file(Path(pretrained_cfg["file"]))
            return
    hub_id = pretrained_cfg.get("hf_hub_id") or ""
    if not hub_id:
        if pretrained_cfg.get("url"):
            return
        raise UserInputError(
            f"{model_name} has no pretrained weight source; create it with pretrained=False, or pass "
            f"pretrained_cfg_overlay=dict(file='model.safetensors')")
    filename = pretrained_cfg.get("hf_hub_filename") or WEIGHTS_FILENAME
    repo_id, _ = split_hub_id(hub_id)
    if repo_id.partition("/")[0] == HF_ORG:
        key = repo_id.partition("/")[2]
        entry = PUBLISHED_WEIGHTS.get(key)
        if entry is None:
            raise UserInputError(
                f"no trained weights are published for {key} yet; train one with train.py or pass "
                f"pretrained_cfg_overlay=dict(file=...)")
        _download_and_verify(key, hub_id, filename, entry.get("sha256"), cache_dir)
    elif source == "hf-hub" and filename == WEIGHTS_FILENAME:
        # someone's own export pushed elsewhere: check the download against the SHA-256 its config records
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            config_path = hf_hub_download(repo_id, "config.json", revision=split_hub_id(hub_id)[1],
                                          cache_dir=cache_dir, library_name="timm-longtail")
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError):
            return  # timm fetched this config a moment ago: a failure now is timm's to report
        expected = expected_sha256_from_config(config_path)
        if expected:
            _download_and_verify(model_name, hub_id, filename, expected, cache_dir)

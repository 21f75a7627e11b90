"""Which ``<model>.<tag>`` weights are published, where they load from, and the checks run before loading.

The table of published weights is a data file in the package, ``published_weights.json``::

    {"<model>.<tag>": {"sha256": "<hex digest of model.safetensors>", "size": <bytes>,
                       "commit": "<git commit the weights were trained from>"}}

loaded once, at import, into :data:`PUBLISHED_WEIGHTS`; :func:`record_published` adds or updates
one entry (atomically). Only the listed ``<model>.<tag>`` cfgs get a weight source
(``hf_hub_id = timm-longtail/<model>.<tag>``), so ``timm.list_pretrained()`` lists exactly them
and each variant's default tag is a published one when it has any
(:func:`with_published_weights`).

The model builders call :func:`check_pretrained_available` when ``pretrained=True``, before timm
loads anything, so that

* a tag with no published weights fails with one clear sentence instead of a Hub 404;
* in a source checkout, published weights committed as ``hub_cards/<model>.<tag>/model.safetensors``
  load from that file, without the network, once its SHA-256 matches the table's;
* otherwise they are downloaded from our Hub organisation (into the ordinary Hub cache, where timm
  then finds them) and their SHA-256 checked against the table;
* a local ``pretrained_cfg_overlay=dict(file=...)`` that is missing, truncated, or differs from the
  SHA-256 its export folder's ``config.json`` records is reported as such.

Two environment variables change where things are looked up (read when used, except the table's,
read at import): ``TIMM_LONGTAIL_REPO_ROOT`` (the source checkout whose ``hub_cards/`` holds
committed weights; default: the folder above the installed ``timm_longtail`` package) and
``TIMM_LONGTAIL_PUBLISHED_WEIGHTS`` (a table file used instead of the packaged one).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
from safetensors import SafetensorError, safe_open
from timm.models import get_pretrained_cfg

from .._paths import CARDS_DIRNAME, REPO_ROOT_ENV, cards_dir, repo_root  # noqa: F401  (re-exported)
from ..files import atomic_write_text, sha256_of_file
from ..errors import UserInputError
from ._cfgs import HF_ORG, HUB_NAME_ALIASES, hub_name, hub_repo_id

__all__ = [
    "PUBLISHED_WEIGHTS", "PUBLISHED_WEIGHTS_ENV", "REPO_ROOT_ENV", "WEIGHTS_FILENAME", "WeightsIntegrityError",
    "check_pretrained_available", "check_safetensors_readable", "committed_weights_file",
    "expected_sha256_from_config", "load_published_weights", "published_entry", "published_weights_path",
    "record_published", "repo_root", "split_hub_id", "verify_sha256", "with_published_weights",
]

WEIGHTS_FILENAME = "model.safetensors"
"""The weight file of every exported folder and Hub repo (timm looks for it first)."""

CONFIG_SHA256_KEY = "weights_sha256"
"""Key, under ``config.json``'s ``"timm_longtail"`` section, of the weight file's SHA-256."""

PUBLISHED_WEIGHTS_FILE = Path(__file__).resolve().with_name("published_weights.json")
"""The packaged table of published weights."""

PUBLISHED_WEIGHTS_ENV = "TIMM_LONGTAIL_PUBLISHED_WEIGHTS"
"""Environment variable naming a table file to use instead of :data:`PUBLISHED_WEIGHTS_FILE`."""


PathLike = Union[str, os.PathLike]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
_KEY_RE = re.compile(r"^([a-z0-9_]+)\.([A-Za-z0-9][A-Za-z0-9_-]*)$")


class WeightsIntegrityError(UserInputError):
    """A weight file whose SHA-256 differs from the published (or exported) one."""


# ---- the table ---------------------------------------------------------------------------------
def published_weights_path() -> Path:
    """The table file in use: ``$TIMM_LONGTAIL_PUBLISHED_WEIGHTS`` if set, else the packaged one."""
    override = os.environ.get(PUBLISHED_WEIGHTS_ENV)
    return Path(override) if override else PUBLISHED_WEIGHTS_FILE


def _check_entry(key: str, entry: Any, where: str) -> Dict[str, Any]:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise UserInputError(f"{where}: {key!r} is not a '<model>.<tag>' name")
    if not isinstance(entry, Mapping):
        raise UserInputError(f"{where}: the entry of {key} must be an object with 'sha256', 'size' and 'commit'")
    sha = entry.get("sha256")
    if not isinstance(sha, str) or not _SHA256_RE.match(sha):
        raise UserInputError(f"{where}: the 'sha256' of {key} must be 64 lower-case hex digits, got {sha!r}")
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise UserInputError(f"{where}: the 'size' of {key} must be a positive number of bytes, got {size!r}")
    commit = entry.get("commit")
    if commit is not None and (not isinstance(commit, str) or not _COMMIT_RE.match(commit)):
        raise UserInputError(f"{where}: the 'commit' of {key} must be a git commit (7-40 hex digits), got {commit!r}")
    return dict(entry)


def load_published_weights(path: Optional[PathLike] = None) -> Dict[str, Dict[str, Any]]:
    """Read and check a table file (default: :func:`published_weights_path`); a missing file is an empty table."""
    from_env = path is None and bool(os.environ.get(PUBLISHED_WEIGHTS_ENV))
    path = Path(path) if path is not None else published_weights_path()
    if not path.is_file():
        if from_env:
            raise UserInputError(f"${PUBLISHED_WEIGHTS_ENV} names {path}, which does not exist")
        return {}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserInputError(f"the published-weights table {path} is not valid JSON: {error}") from None
    if not isinstance(table, dict):
        raise UserInputError(f"the published-weights table {path} must be a JSON object keyed by '<model>.<tag>'")
    return {key: _check_entry(key, entry, str(path)) for key, entry in table.items()}


PUBLISHED_WEIGHTS: Dict[str, Dict[str, Any]] = load_published_weights()
"""``"<model>.<tag>" -> {"sha256", "size", "commit"}`` for every published ``model.safetensors``,
read from :func:`published_weights_path` at import (the cfgs registered with timm follow it)."""


def record_published(key: str, sha256: str, size: int, commit: str, *,
                     table: Optional[PathLike] = None) -> Dict[str, Any]:
    """Add or update the entry of ``<model>.<tag>`` in the published-weights table; returns the entry.

    ``sha256`` and ``size`` describe the ``model.safetensors`` pushed to (or committed for)
    ``timm-longtail/<model>.<tag>``; ``commit`` is the git commit it was trained from. ``key`` must
    be a registered ``<model>.<tag>`` of a canonical model name (an alias shares its model's
    entry). The table file ``table`` (default: :func:`published_weights_path`) is re-read, updated and replaced
    atomically (temporary file + ``os.replace``), keys sorted, so concurrent readers never see a
    partial table. The in-memory :data:`PUBLISHED_WEIGHTS` follows when it is the table in use;
    the cfgs registered with timm (``list_pretrained``, default tags) follow at the next import.
    """

    match = _KEY_RE.match(key) if isinstance(key, str) else None
    if not match:
        raise UserInputError(f"{key!r} is not a '<model>.<tag>' name (e.g. ride_resnet32_3e.cifar10_lt_if100)")
    model_name, tag = match.groups()
    if model_name in HUB_NAME_ALIASES:
        raise UserInputError(f"{model_name} is an alias: record the weights as {hub_name(model_name, tag)}")
    try:
        registered = get_pretrained_cfg(key, allow_unregistered=False)
    except RuntimeError:
        registered = None
    if registered is None or not model_name.startswith(("ride_", "nclpp_")):
        raise UserInputError(f"{key} is not a registered timm-longtail <model>.<tag>: register the tag for "
                             f"{model_name} first (DATASET_TAGS and the model file's cfgs)")
    if size is None or not commit:
        raise UserInputError("record_published needs the weight file's size and the commit it was trained from")
    entry = _check_entry(key, dict(sha256=str(sha256).lower(), size=size, commit=str(commit).lower()),
                         "record_published")
    target = Path(table) if table is not None else published_weights_path()
    entries = load_published_weights(target) if target.is_file() else {}
    entries[key] = entry
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(dict(sorted(entries.items())), indent=2) + "\n")
    if target.resolve() == published_weights_path().resolve():
        PUBLISHED_WEIGHTS[key] = dict(entry)
    return entry


def with_published_weights(cfgs: Mapping[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The model file's ``{"<model>.<tag>": cfg}`` with a weight source on the published ones only.

    A published cfg gets ``hf_hub_id = timm-longtail/<model>.<tag>`` (so timm's ``has_weights`` is
    true for it alone), and each model's published tags come first, so that the first, its default
    tag in ``generate_default_cfgs``, has weights whenever the model has any.
    """
    by_model: Dict[str, list] = {}
    for key in cfgs:
        by_model.setdefault(key.split(".", 1)[0], []).append(key)
    out: Dict[str, Dict[str, Any]] = {}
    for model_name, keys in by_model.items():
        def published(key: str) -> bool:
            return "." in key and hub_name(model_name, key.split(".", 1)[1]) in PUBLISHED_WEIGHTS

        for key in sorted(keys, key=lambda k: not published(k)):  # stable: published first, else as given
            cfg = dict(cfgs[key])
            cfg.pop("hf_hub_id", None)
            if published(key):
                cfg["hf_hub_id"] = hub_repo_id(model_name, key.split(".", 1)[1])
            out[key] = cfg
    return out


# ---- the source checkout -----------------------------------------------------------------------
def committed_weights_file(key: str) -> Optional[Path]:
    """``<repo root>/hub_cards/<model>.<tag>/model.safetensors`` when it exists, else ``None``."""
    path = cards_dir() / key / WEIGHTS_FILENAME
    return path if path.is_file() else None


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


def _unpublished(name: str) -> UserInputError:
    return UserInputError(
        f"no trained weights are published for {name} yet; train one with train.py or pass "
        f"pretrained_cfg_overlay=dict(file=...) (timm.list_pretrained('ride_*') and ('nclpp_*') list the "
        f"published ones)")


def _verify_committed(path: Path, key: str, entry: Mapping[str, Any]) -> None:
    """A committed ``hub_cards`` weight file must be the published one, byte for byte."""
    size = entry.get("size")
    actual_size = path.stat().st_size
    actual = sha256_of_file(path) if size is None or size == actual_size else None
    if actual is None or actual != entry["sha256"]:
        found = f"SHA-256 {actual}" if actual is not None else f"{actual_size} bytes, not {size}"
        raise WeightsIntegrityError(
            f"{path} is not the published model.safetensors of {key} ({found}; the table says SHA-256 "
            f"{entry['sha256']}): restore it from git (`git checkout -- {CARDS_DIRNAME}/{key}`) or delete it "
            f"to download the published weights from the Hub")


def check_pretrained_available(
        model_name: str,
        pretrained_cfg: Mapping[str, Any],
        cache_dir: Optional[PathLike] = None,
) -> Optional[Dict[str, Any]]:
    """Check, before timm loads ``pretrained=True`` weights, that they exist and are intact.

    Follows timm's choice of source (``state_dict`` > ``file`` > ``hf_hub_id`` > ``url``; a cfg
    loaded from ``hf-hub:``/``local-dir:`` uses that source). Our ``<model>.<tag>`` weights must be
    listed in :data:`PUBLISHED_WEIGHTS`. Loaded by name from a source checkout that holds them as
    ``hub_cards/<model>.<tag>/model.safetensors`` (see :func:`repo_root`), that file is checked
    against the table's SHA-256 and used; otherwise they are downloaded into the Hub cache (timm
    reuses the cached file) and checked. Any failure is one :class:`UserInputError` naming what to do.

    Returns the ``pretrained_cfg_overlay`` entries timm needs to load from the checked source
    (``{"file": <committed file>}``, or the ``hf_hub_id`` of weights published after the cfgs were
    registered), or ``None`` when the cfg is right as it is.
    """
    source = pretrained_cfg.get("source") or ""
    if source == "local-dir":
        _check_local_folder(Path(pretrained_cfg.get("file") or ""))
        return None
    if source != "hf-hub":
        if pretrained_cfg.get("state_dict") is not None:
            return None
        if pretrained_cfg.get("file"):
            _check_local_file(Path(pretrained_cfg["file"]))
            return None
    overlay: Dict[str, Any] = {}
    hub_id = pretrained_cfg.get("hf_hub_id") or ""
    architecture = pretrained_cfg.get("architecture") or model_name
    tag = pretrained_cfg.get("tag")
    if not hub_id and not pretrained_cfg.get("url") and tag and architecture.startswith(("ride_", "nclpp_")):
        # one of our tags without a weight source: unpublished (or published after the cfgs were registered)
        if hub_name(architecture, tag) not in PUBLISHED_WEIGHTS:
            raise _unpublished(f"{architecture}.{tag}")
        hub_id = overlay["hf_hub_id"] = hub_repo_id(architecture, tag)
    if not hub_id:
        if pretrained_cfg.get("url"):
            return None
        raise UserInputError(
            f"{model_name} has no pretrained weight source; create it with pretrained=False, or pass "
            f"pretrained_cfg_overlay=dict(file='model.safetensors')")
    filename = pretrained_cfg.get("hf_hub_filename") or WEIGHTS_FILENAME
    repo_id, _ = split_hub_id(hub_id)
    if repo_id.partition("/")[0] == HF_ORG:
        key = repo_id.partition("/")[2]
        entry = PUBLISHED_WEIGHTS.get(key)
        if entry is None:
            raise _unpublished(key)
        committed = committed_weights_file(key) if source != "hf-hub" and filename == WEIGHTS_FILENAME else None
        if committed is not None:
            _verify_committed(committed, key, entry)
            check_safetensors_readable(committed)
            return dict(overlay, file=str(committed))
        _download_and_verify(key, hub_id, filename, entry.get("sha256"), cache_dir)
    elif source == "hf-hub" and filename == WEIGHTS_FILENAME:
        # someone's own export pushed elsewhere: check the download against the SHA-256 its config records
        try:
            config_path = hf_hub_download(repo_id, "config.json", revision=split_hub_id(hub_id)[1],
                                          cache_dir=cache_dir, library_name="timm-longtail")
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError):
            return overlay or None  # timm fetched this config a moment ago: a failure now is timm's to report
        expected = expected_sha256_from_config(config_path)
        if expected:
            _download_and_verify(model_name, hub_id, filename, expected, cache_dir)
    return overlay or None

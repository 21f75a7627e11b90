"""Paths as results files and model cards show them: never an absolute path of the machine that ran.

A path inside the source checkout (or inside another checkout of this project, e.g. the ``git
worktree`` a zoo build trained from), or beside it (``../shared/data/cifar10``), is written relative
to the checkout; any other absolute path is reduced to its last component (the folder's or file's
name). Relative paths are kept as given, except one into a removed worktree of this project
(``../zoo-src-47/configs/x.yaml`` -> ``configs/x.yaml``), so that a card reads the same whenever it is written.

Folders a caller knows (a zoo build's runs and data folders) can be named by labels instead (``<runs>/x``,
:func:`label_paths`), and a file about to be published is checked for any absolute path left
(:func:`check_no_machine_paths`).
"""
from __future__ import annotations

import os
import posixpath
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple

from .errors import UserInputError

__all__ = ["CARDS_DIRNAME", "REPO_ROOT_ENV", "SOURCE_ROOT", "cards_dir", "check_no_machine_paths", "label_paths",
           "portable_path", "portable_paths", "repo_root"]

SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The folder above the package: the source checkout (configs/, hub_cards/) in an editable install."""

CARDS_DIRNAME = "hub_cards"
"""The checkout's folder of published model cards and committed weights, ``hub_cards/<model>.<tag>/``."""

REPO_ROOT_ENV = "TIMM_LONGTAIL_REPO_ROOT"
"""Environment variable naming the source checkout whose ``hub_cards/`` is meant (weights, cards, templates)."""


def repo_root() -> Path:
    """The source checkout: ``$TIMM_LONGTAIL_REPO_ROOT`` if set, else the folder above the ``timm_longtail``
    package (a wheel install has no ``hub_cards/`` there, so nothing is found)."""
    override = os.environ.get(REPO_ROOT_ENV)
    return Path(override).expanduser().resolve() if override else SOURCE_ROOT


def cards_dir() -> Path:
    """``<repo root>/hub_cards``: committed weights, model cards, card templates and ``reference.yaml``."""
    return repo_root() / CARDS_DIRNAME


def _is_absolute(text: str) -> bool:
    return text.startswith("/") and not text.startswith("//") or (len(text) > 2 and text[1] == ":" and text[2] in "/\\")


def portable_path(path: Any, root: Optional[os.PathLike] = None) -> str:
    """``/work/main/runs/x/last.pth`` -> ``runs/x/last.pth``; ``/work/shared/data/c10`` -> ``../shared/data/c10``;
    ``/data/imagenet`` -> ``imagenet``. ``root`` is the checkout (default: the one holding this package)."""
    text = os.fspath(path)
    base = PurePosixPath(posixpath.normpath(os.fspath(root or SOURCE_ROOT).replace("\\", "/")))
    if not _is_absolute(text):
        return _outside_relative(text, base) if text.startswith("../") else text
    normal = posixpath.normpath(text.replace("\\", "/"))
    target = PurePosixPath(normal)
    other = _other_checkout(target) or _gone_checkout(target, base)
    anchors = (("", base), ("", other), ("../", base.parent)) if other else (("", base), ("../", base.parent))
    for prefix, anchor in anchors:
        if anchor != PurePosixPath("/") and (target == anchor or anchor in target.parents):
            rel = target.relative_to(anchor).as_posix()
            return (prefix + rel).rstrip("/") if rel != "." else (prefix.rstrip("/") or ".")
    return target.name or text


def _other_checkout(target: PurePosixPath) -> Optional[PurePosixPath]:
    """The checkout of this project (a ``git worktree`` too) that holds ``target``, looked up on disk:
    a run trained from another worktree shows ``configs/x.yaml``, not ``../zoo-src/configs/x.yaml``."""
    for folder in list(target.parents)[:-1]:  # never "/"
        path = Path(folder)
        if (path / ".git").exists() and (path / "train.py").is_file() and (path / "timm_longtail").is_dir():
            return folder
    return None


def _outside_relative(text: str, base: PurePosixPath) -> str:
    """``../zoo-src-47/configs/x.yaml``, recorded while that worktree existed, reads ``configs/x.yaml`` once
    it is gone (see :func:`_gone_checkout`); any other relative path is kept as given."""
    target = PurePosixPath(posixpath.normpath(f"{base}/{text}"))
    gone = _gone_checkout(target, base)
    return target.relative_to(gone).as_posix() if gone else text


def _gone_checkout(target: PurePosixPath, base: PurePosixPath) -> Optional[PurePosixPath]:
    """A folder no longer on disk whose ``target`` tail (two parts or more, e.g. ``configs/x.yaml``) is a
    file of this checkout: a removed ``git worktree`` a run was trained from, so that its path reads
    ``configs/x.yaml`` whether or not the worktree is still there when the card is written."""
    for folder in list(target.parents)[1:-1]:  # never the file's own folder alone, never "/"
        tail = target.relative_to(folder)
        if len(tail.parts) >= 2 and not Path(folder).exists() and (Path(base) / tail).is_file():
            return folder
    return None


def _rewritable(text: str) -> bool:
    """What :func:`portable_path` may change: an absolute path, or one recorded relative outside the checkout."""
    return _is_absolute(text) or text.startswith("../")


def _portable_text(text: str, root: Optional[os.PathLike]) -> str:
    if _rewritable(text) and not any(c.isspace() for c in text):
        return portable_path(text, root)
    if "/" not in text or not any(c.isspace() for c in text):
        return text
    try:  # a command line: rewrite its path arguments as portable_path does (also --flag=/path)
        tokens = shlex.split(text)
    except ValueError:
        return text
    changed = False
    for i, token in enumerate(tokens):
        flag, eq, value = token.partition("=")
        prefix, path = (f"{flag}=", value) if eq and flag.startswith("-") else ("", token)
        if _rewritable(path):
            shown = prefix + portable_path(path, root)
            tokens[i], changed = shown, changed or shown != token
    return " ".join(map(_shown_token, tokens)) if changed else text


def _shown_token(token: str) -> str:
    """Quoted only where a shell would split it: ``<runs>/x`` stays as the zoo build writes it."""
    return shlex.quote(token) if not token or any(c.isspace() or c in "'\"\\" for c in token) else token


def portable_paths(value: Any, root: Optional[os.PathLike] = None) -> Any:
    """``value`` with every absolute path in it (strings, command lines, nested in dicts and lists)
    rewritten by :func:`portable_path`; ``Path`` objects become strings."""
    if isinstance(value, Mapping):
        return {key: portable_paths(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable_paths(item, root) for item in value)
    if isinstance(value, os.PathLike):
        return portable_path(value, root)
    if isinstance(value, str):
        return _portable_text(value, root)
    return value


# where a path prefix may end: ``/work/zoo-runs`` labels ``/work/zoo-runs/x`` but not ``/work/zoo-runs-old/x``
_PATH_END = r"(?=$|[\s/'\"=:,;)\]])"

_DOTTED_PATH = re.compile(r"(?<![\w.<>:/])/[\w.-]+(?:/[\w.-]+)*/\.\.(?:/[\w.-]+)*")  # /a/b/../c

_ABSOLUTE = re.compile(r"(?<![\w.<>:/])/(?:[\w.-]+/)+[\w.-]*")  # /a/b... not after a word, ../, <label>, scheme:/


def _label_text(text: str, labels: Sequence[Tuple[str, str]]) -> str:
    # normal form first: a run started from a worktree records its data as <worktree>/../shared/..., which
    # must get the same label whichever checkout publishes it
    text = _DOTTED_PATH.sub(lambda match: os.path.normpath(match.group(0)), text)
    for prefix, label in sorted(labels, key=lambda pair: -len(pair[0])):  # the longest prefix first
        if prefix and prefix in text:
            end = "" if prefix.endswith(os.sep) else _PATH_END
            text = re.sub(re.escape(prefix) + end, lambda _match, label=label: label, text)
    return text


def label_paths(value: Any, labels: Sequence[Tuple[str, str]]) -> Any:
    """``value`` (text, or dicts and lists of it) with each ``(prefix, label)`` prefix replaced by its label
    where it ends at a folder boundary (``/work/zoo-runs/x`` -> ``<runs>/x``, not ``/work/zoo-runs-old/x``)."""
    if isinstance(value, str):
        return _label_text(value, labels)
    if isinstance(value, dict):
        return {k: label_paths(v, labels) for k, v in value.items()}
    if isinstance(value, list):
        return [label_paths(v, labels) for v in value]
    return value


def check_no_machine_paths(paths: Iterable[Path]) -> None:
    """Refuse to publish a JSON or Markdown file that still holds an absolute path of this machine."""
    for path in paths:
        if path.suffix in (".json", ".md"):
            found = _ABSOLUTE.search(path.read_text(encoding="utf-8"))
            if found:
                raise UserInputError(f"{path.name} would publish the machine path {found.group(0)!r}: not published")

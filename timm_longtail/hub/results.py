"""Read the result JSON of ``validate.py`` / ``train.py`` into one row per forward mode.

A card is filled from these numbers only, never typed by hand, so the reader is strict: a value
that is not a number, a top-1 outside [0, 100], a row without a forward mode or a mode listed twice
is a :class:`UserInputError` naming the file.

Accepted layouts (keys per row: ``forward_mode``, ``top1``, ``top5``, ``top1_many``,
``top1_medium``, ``top1_few``, ``macs_per_image``, ``flops_per_image``, ``experts_used_hist``):

* one row: ``{"forward_mode": "ensemble", "top1": 47.1, ...}``
* a list of rows: ``[{...}, {...}]``
* rows under a key, with run-wide keys beside them: ``{"results": [...] | {mode: {...}}, "recipe": ...}``
  (``"modes"`` and ``"eval"`` work as the key too)
* a mapping from mode to row: ``{"ensemble": {"top1": ...}, "expert:0": {...}}``

Run-wide keys (``recipe``, ``command``, ``seed``, ``wall_time_s``, ``split``, ``num_samples``,
``shot_rule``, ``model``, ``notes``...) may sit at the top level or in the rows.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..errors import UserInputError

__all__ = ["LOSSLESS_KEY", "ModeResult", "RunResults", "load_results", "parse_results"]

LOSSLESS_KEY = "lossless_subset"
"""The run-wide key of a published ``results.json`` holding its weights' figures on the lossless
originals of some test images and on the same rows of its data (``analyze.py lossless-subset``)."""

ROW_KEYS = ("forward_mode", "mode", "top1", "top5", "top1_many", "top1_medium", "top1_few",
            "macs_per_image", "flops_per_image", "experts_used_hist")
_PERCENT_KEYS = ("top1", "top5", "top1_many", "top1_medium", "top1_few")
_ROWS_KEYS = ("results", "modes", "eval")


@dataclass(frozen=True)
class ModeResult:
    """The measured numbers of one forward mode (accuracies in %)."""

    mode: str
    top1: float
    top5: Optional[float] = None
    top1_many: Optional[float] = None
    top1_medium: Optional[float] = None
    top1_few: Optional[float] = None
    macs_per_image: Optional[float] = None
    flops_per_image: Optional[float] = None
    experts_used_hist: Optional[List[float]] = None

    @property
    def mode_kind(self) -> str:
        """``"expert"`` for any ``expert:<i>``, else the mode itself (how papers label figures)."""
        return "expert" if self.mode.startswith("expert") else self.mode


@dataclass
class RunResults:
    """Every forward mode's numbers, and what the run recorded about itself."""

    modes: List[ModeResult]
    info: Dict[str, Any] = field(default_factory=dict)

    def by_mode(self) -> Dict[str, ModeResult]:
        return {row.mode: row for row in self.modes}


def _number(value: Any, key: str, where: str) -> Optional[float]:
    """A finite number, or ``None`` for a missing/NaN value (an empty shot group has no accuracy)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserInputError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _histogram(value: Any, where: str) -> Optional[List[float]]:
    if value is None:
        return None
    if isinstance(value, Mapping):  # {"1": n1, "2": n2, ...}
        try:
            value = [value[k] for k in sorted(value, key=lambda k: int(k))]
        except (TypeError, ValueError):
            raise UserInputError(f"{where}: 'experts_used_hist' keys must be expert counts 1..E") from None
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise UserInputError(f"{where}: 'experts_used_hist' must be a list of counts or fractions")
    counts = [_number(v, "experts_used_hist", where) for v in value]
    if any(c < 0 for c in counts) or sum(counts) <= 0:
        raise UserInputError(f"{where}: 'experts_used_hist' must hold non-negative counts, not all zero")
    return counts


def _row(raw: Mapping[str, Any], where: str, mode: Optional[str] = None) -> ModeResult:
    mode = raw.get("forward_mode") or raw.get("mode") or mode
    if not isinstance(mode, str) or not mode:
        raise UserInputError(f"{where}: every result needs its 'forward_mode' (e.g. 'ensemble', 'expert:0', 'routed')")
    if raw.get("top1") is None:
        raise UserInputError(f"{where}: the result for mode {mode!r} has no 'top1'")
    values = {key: _number(raw.get(key), key, where) for key in _PERCENT_KEYS}
    for key in _PERCENT_KEYS:
        if values[key] is not None and not 0.0 <= values[key] <= 100.0:
            raise UserInputError(
                f"{where}: '{key}' of mode {mode!r} is {values[key]}: accuracies must be percentages in [0, 100]")
    return ModeResult(
        mode=mode.strip().lower(), **values,
        macs_per_image=_number(raw.get("macs_per_image"), "macs_per_image", where),
        flops_per_image=_number(raw.get("flops_per_image"), "flops_per_image", where),
        experts_used_hist=_histogram(raw.get("experts_used_hist"), where),
    )


def _looks_like_row(value: Any) -> bool:
    return isinstance(value, Mapping) and "top1" in value


def parse_results(payload: Any, where: str = "results") -> RunResults:
    """Normalise any accepted layout (see the module docstring) into :class:`RunResults`."""
    info: Dict[str, Any] = {}
    raw_rows: List[tuple] = []  # (row mapping, mode from the enclosing key)
    if isinstance(payload, list):
        raw_rows = [(row, None) for row in payload]
    elif isinstance(payload, Mapping):
        rows_key = next((k for k in _ROWS_KEYS if k in payload), None)
        if rows_key is not None:
            rows = payload[rows_key]
            info = {k: v for k, v in payload.items() if k != rows_key}
            if isinstance(rows, Mapping):
                raw_rows = [(row, mode) for mode, row in rows.items()]
            elif isinstance(rows, list):
                raw_rows = [(row, None) for row in rows]
            else:
                raise UserInputError(
                    f"{where}: '{rows_key}' must be a list of results or a mapping from mode to result")
        elif _looks_like_row(payload):
            raw_rows = [(payload, None)]
        elif payload and all(_looks_like_row(v) for v in payload.values()):
            raw_rows = [(row, mode) for mode, row in payload.items()]
    if not raw_rows:
        raise UserInputError(f"{where} holds no results: expected rows with 'forward_mode' and 'top1' "
                             f"(the JSON validate.py / train.py write)")
    modes: List[ModeResult] = []
    for index, (raw, mode) in enumerate(raw_rows):
        if not isinstance(raw, Mapping):
            raise UserInputError(f"{where}: result {index} is not a JSON object")
        modes.append(_row(raw, f"{where} (result {index})", mode))
        for key, value in raw.items():  # run-wide keys repeated in the rows
            if key not in ROW_KEYS:
                info.setdefault(key, value)
    seen = [row.mode for row in modes]
    duplicates = sorted({mode for mode in seen if seen.count(mode) > 1})
    if duplicates:
        raise UserInputError(f"{where}: forward mode(s) {duplicates} are listed more than once")
    return RunResults(modes=modes, info=info)


def load_results(path: Union[str, Path]) -> RunResults:
    """Read and normalise a result JSON file."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"results file not found: {path}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserInputError(f"results file {path} is not valid JSON: {error}") from None
    return parse_results(payload, where=str(path))

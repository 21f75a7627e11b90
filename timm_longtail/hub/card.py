"""Model cards rendered from a template, the run's results and the checkpoint, never by hand.

The template (``hub_cards/templates/model_card.md.j2``) holds the prose; ``hub_cards/reference.yaml``
holds what the card says about methods, datasets and the papers' published figures. This module
only gathers facts into the template's context: the README's YAML front matter (with the
``model-index`` the Hub shows as an evaluation table) is built with huggingface_hub's
``ModelCardData`` and ``EvalResult``, so the Hub reads it back as written.

A checkpoint trained in stages (RIDE's router stage on top of the experts stage, a student
distilled from a teacher) records its ``lineage``; the card lists every stage's recipe, oldest
first, and compares the paper's recipe with the experts stage's. Paths in recipes and commands
are shown relative to the checkout, or as bare names, never as absolute paths.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from huggingface_hub import EvalResult, ModelCardData, RepoCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from .._paths import cards_dir as checkout_cards_dir, portable_path, portable_paths, repo_root
from .._format import percent
from ..checkpoint import start_command
from ..data.longtail import SHOT_RULES, ShotSplit
from ..errors import UserInputError
from ..models import dataset_tag
from .results import LOSSLESS_KEY, ModeResult, RunResults

__all__ = [
    "METRIC_DECIMALS", "build_card_context", "build_card_data", "build_front_matter", "load_reference",
    "load_reference_run", "parse_model_name",
    "read_front_matter", "render_card",
]

TEMPLATE_NAME = "model_card.md.j2"
_ARCH_ALIASES = {"resnext50": "resnext50_32x4d"}
_RECIPE_SUMMARY_KEYS = (
    "method", "stage", "dataset", "imbalance_factor", "epochs", "batch_size", "lr", "opt", "momentum",
    "weight_decay", "sched", "warmup_epochs", "decay_milestones", "decay_rate", "drw_epoch", "num_copies",
    "loss_kwargs", "teacher", "train_transform", "amp", "select_by", "val_split_fraction", "seed",
)
# train_time_s first: the sum of the stage's epoch times, kept across resumes; a resumed run's
# wall_time_s covers only its last segment (possibly just the final evaluation)
_WALL_TIME_KEYS = ("train_time_s", "wall_time_s", "wall_time_seconds", "wall_time", "elapsed_s")
METRIC_DECIMALS = 2
"""Accuracies in the ``model-index`` are rounded to this many decimals (as the card's tables show them)."""


def parse_model_name(model_name: str) -> Tuple[str, str]:
    """``ride_resnext50_32x4d_3e`` -> ``("ride", "resnext50_32x4d")``; ``nclpp_resnext50`` likewise."""
    match = re.match(r"^(ride|nclpp)_(.+?)(?:_(\d+)e)?$", model_name)
    if not match:
        raise UserInputError(f"{model_name!r} is not a RIDE or NCL++ model (ride_* / nclpp_*): no card template for it")
    method, arch = match.group(1), match.group(2)
    return method, _ARCH_ALIASES.get(arch, arch)


def load_reference(cards_dir: Optional[Path] = None) -> Dict[str, Any]:
    """``hub_cards/reference.yaml``: methods, datasets, paper recipes and published figures."""
    path = Path(cards_dir or checkout_cards_dir()) / "reference.yaml"
    if not path.is_file():
        raise UserInputError(f"card reference data not found at {path}: run from a timm-longtail source "
                             f"checkout, or pass --cards-dir pointing at its hub_cards/ folder")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def read_front_matter(text: str) -> Dict[str, Any]:
    """The YAML metadata block at the top of a model card, as a dict, read by ``huggingface_hub``'s
    ``RepoCard`` (the Hub's own reader); a card without one, or with invalid YAML, is one clear error."""
    if not REGEX_YAML_BLOCK.search(text):  # RepoCard accepts a card without metadata (empty)
        raise UserInputError("the model card has no YAML front matter (a block between '---' lines at the top)")
    try:
        return RepoCard(text).data.to_dict()
    except yaml.YAMLError as error:
        raise UserInputError(f"the model card's front matter is not valid YAML: {error}") from None
    except ValueError:  # RepoCard: "repo card metadata block should be a dict"
        raise UserInputError("the model card's front matter must be a YAML mapping") from None


# ---- formatting ------------------------------------------------------------------------------
def _pct(value: Optional[float]) -> str:
    return percent(value, missing="—")


def _macs(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value / 1e9:.3f} G" if value >= 1e7 else f"{value / 1e6:.2f} M"


def _histogram(counts: Optional[Sequence[float]]) -> str:
    if not counts:
        return "—"
    total = float(sum(counts))
    return ", ".join(f"{n}: {100.0 * c / total:.0f}%" for n, c in enumerate(counts, start=1))


def _duration(seconds: Any) -> Optional[str]:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return str(seconds) if seconds else None
    minutes = int(round(seconds / 60.0))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _dataset_of(tag: str) -> str:
    """The dataset a (possibly recipe-prefixed) tag names; an unregistered tag stands for itself."""
    try:
        return dataset_tag(tag)
    except KeyError:
        return tag


# ---- facts -----------------------------------------------------------------------------------
def _paper_rows(reference: Mapping[str, Any], method: str, arch: str, experts: int, tag: str) -> List[Dict[str, Any]]:
    rows = [row for row in reference.get("paper_results") or []
            if row.get("method") == method and row.get("arch") == arch
            and int(row.get("experts", 0)) == experts and row.get("dataset") == _dataset_of(tag)]
    return sorted(rows, key=lambda row: (row.get("source") != "paper", str(row.get("mode"))))


def _published_for(row: ModeResult, paper_rows: Sequence[Mapping[str, Any]]) -> str:
    matches = [f"{p['top1']:.1f} ({p['source']})" for p in paper_rows if p.get("mode") == row.mode_kind]
    return ", ".join(matches) if matches else "—"


def _differences(reference: Mapping[str, Any], method: str, family: Optional[str], recipe: Mapping[str, Any],
                 info: Mapping[str, Any], has_paper_figures: bool, dataset_name: str,
                 compared: Optional[Mapping[str, Any]] = None, compared_label: str = "") -> List[str]:
    """How our recipe differs from the paper's. ``compared`` is the recipe of the experts stage (the
    one the paper's recipe describes; ``None`` when it is not recorded), ``recipe`` this checkpoint's."""
    lines: List[str] = []
    recipes = (reference.get("paper_recipes") or {}).get(method) or {}
    distilled = bool((compared or {}).get("teacher"))  # a distilled student follows the paper's distillation recipe
    paper = (distilled and recipes.get(f"{family}_distill")) or recipes.get(family or "") or {}
    method_name = reference["methods"][method]["name"]
    if compared is None and paper:
        lines.append(f"This checkpoint's {recipe.get('stage') or 'training'} stage started from a checkpoint "
                     f"whose recipe is not recorded: its experts stage cannot be compared with the "
                     f"{method_name} paper's recipe.")
    for key, paper_value in paper.items() if compared is not None else ():
        ours = compared.get(key)
        if ours is None:
            continue
        if key == "warmup_start_factor":
            continue
        if key == "warmup_epochs":  # the same warm-up counts its epochs differently: compare the lr per epoch
            line = _warmup_difference(compared, paper_value, float(paper.get("lr") or compared.get("lr") or 0),
                                      float(paper.get("warmup_start_factor") or 0.0))
            if line:
                lines.append(f"{compared_label}warm-up: {line.format(method=method_name)}")
            continue
        if isinstance(paper_value, (int, float)) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
            same = abs(float(ours) - float(paper_value)) <= 1e-12 * max(1.0, abs(float(paper_value)))
        else:
            same = ours == paper_value
        if not same:
            lines.append(f"{compared_label}`{key}`: ours {ours}, the {method_name} paper's recipe {paper_value}.")
    if not paper:
        lines.append(f"The {method_name} paper gives no recipe for {dataset_name}: the recipe above is ours.")
    if not has_paper_figures:
        lines.append(f"No published {method_name} figure exists for this model size on {dataset_name}.")
    lines.extend((reference.get("method_notes") or {}).get(method) or [])
    for key in ("notes", "differences_from_paper"):
        extra = info.get(key) if info.get(key) is not None else recipe.get(key)
        if isinstance(extra, str) and extra.strip():
            lines.append(extra.strip())
        elif isinstance(extra, (list, tuple)):
            lines.extend(str(item) for item in extra if str(item).strip())
    return lines


def _warmup_difference(recipe: Mapping[str, Any], paper_epochs: int, paper_lr: float,
                       start_factor: float = 0.0) -> str:
    """"" when our warm-up gives the papers' learning rates epoch by epoch, else how they differ.

    The papers' code warms up over W epochs, epoch e (1-indexed) at lr * (s (1 - e/W) + e/W), epoch W
    at the full lr: s = 0 in RIDE's and LDAM-DRW's code (lr * e / W), s = 1/3 in NCL's. timm warms up
    over ``warmup_epochs`` epochs from ``warmup_lr`` to lr (exclusive): 4 timm warm-up epochs from
    lr / 5 are RIDE's W = 5."""
    epochs, lr = int(recipe.get("warmup_epochs") or 0), float(recipe.get("lr") or 0)
    start = float(recipe.get("warmup_lr") or 0)
    ours = [start + (lr - start) * t / epochs for t in range(epochs)]
    theirs = [paper_lr * (start_factor * (1 - e / paper_epochs) + e / paper_epochs) for e in range(1, int(paper_epochs))]
    if len(ours) == len(theirs) and all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(ours, theirs)):
        return ""
    shown = ", ".join(f"{v:.4g}" for v in ours) or "none"
    return (f"ours lr {shown} in the first {epochs} epochs, the {{method}} paper's recipe "
            f"{', '.join(f'{v:.4g}' for v in theirs)} over its first {paper_epochs - 1} epochs, then {paper_lr:g}.")


def _shot_split(info: Mapping[str, Any], class_counts: Sequence[int]) -> Tuple[str, Dict[str, int]]:
    """The shot rule the results were computed with (``shot_split`` from the lt_accuracy metric, or a
    named ``shot_rule``; the standard rule when neither is given) and the class count per split."""

    recorded = info.get("shot_split")
    if isinstance(recorded, Mapping) and "many_threshold" in recorded and "few_threshold" in recorded:
        split = ShotSplit(int(recorded["many_threshold"]), int(recorded["few_threshold"]),
                          bool(recorded.get("inclusive", False)))
    else:
        rule = info.get("shot_rule") or "standard"
        if not isinstance(rule, str) or rule not in SHOT_RULES:
            raise UserInputError(f"results: 'shot_rule' must be one of {sorted(SHOT_RULES)}, got {rule!r}")
        split = ShotSplit.from_rule(rule)
    return split.describe(), split.split_sizes(class_counts)


_METRIC_LABELS = (("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy"), ("top1_many", "Many-shot top-1 accuracy"),
                  ("top1_medium", "Medium-shot top-1 accuracy"), ("top1_few", "Few-shot top-1 accuracy"))


def build_card_data(*, repo_name: str, method: str, dataset: Mapping[str, Any], tag: str, eval_split: str,
                    results: RunResults, license_id: str, method_name: str,
                    data_copy: Optional[Mapping[str, Any]] = None):
    """The card's metadata as a ``huggingface_hub.ModelCardData``: library, licence, tags, and one
    ``EvalResult`` per forward mode and metric (named ``"<metric> (<mode>)"``, value in %, rounded to
    :data:`METRIC_DECIMALS`), which it turns into the ``model-index`` the Hub shows.

    Trained and tested on a local copy of the Hub dataset (``data_copy``, e.g. JPEG CIFAR-10): ``datasets``
    still names the Hub dataset the images come from (the spec has no field for a derived copy), but every
    evaluation result's dataset name says it was the copy (``"..., JPEG q75 copy"``) and a tag marks it."""
    dataset_name = str(dataset.get("name", tag)) + (f", {data_copy['short']}" if data_copy else "")
    eval_results = [
        EvalResult(task_type="image-classification", task_name="Image Classification",
                   dataset_type=str(dataset.get("hub_id") or tag), dataset_name=dataset_name,
                   dataset_split=eval_split, metric_type="accuracy", metric_name=f"{label} ({row.mode})",
                   metric_value=round(float(getattr(row, key)), METRIC_DECIMALS))
        for row in results.modes for key, label in _METRIC_LABELS if getattr(row, key) is not None
    ]
    return ModelCardData(
        library_name="timm", license=license_id, pipeline_tag="image-classification",
        tags=["image-classification", "timm", "timm-longtail", "long-tailed-recognition", "multi-expert",
              method_name.lower().replace("+", "p")] + ([data_copy["tag"]] if data_copy else []),
        datasets=[dataset["hub_id"]] if dataset.get("hub_id") else None, metrics=["accuracy"],
        model_name=repo_name, eval_results=eval_results,
    )


def build_front_matter(**kwargs: Any) -> Dict[str, Any]:
    """:func:`build_card_data` as the plain dict written to the card's YAML front matter."""
    return build_card_data(**kwargs).to_dict()


# ---- training stages -------------------------------------------------------------------------
def _stage_name(recipe: Mapping[str, Any]) -> str:
    stage = recipe.get("stage")
    return f"{stage} stage" if stage else "training"


def _flatten_lineage(lineage: Any, prefix: str = "", own: bool = True,
                     ) -> List[Tuple[str, Mapping[str, Any], bool]]:
    """(label, entry, own) for every recorded ancestor, oldest first; a teacher's own ancestors precede
    it. ``own`` is False for the teacher and its ancestors: stages of another model's chain."""
    out: List[Tuple[str, Mapping[str, Any], bool]] = []
    for entry in lineage if isinstance(lineage, list) else []:
        if not isinstance(entry, Mapping):
            continue
        recipe = entry.get("recipe") if isinstance(entry.get("recipe"), Mapping) else {}
        model = f"`{entry.get('model_name')}`" if entry.get("model_name") else "a checkpoint"
        if entry.get("role") == "teacher":
            out.extend(_flatten_lineage(entry.get("lineage"), f"{prefix}the teacher's earlier stage: ", own=False))
            out.append((f"{prefix}teacher {model}, {_stage_name(recipe)}", entry, False))
        elif entry.get("role") == "resumed":  # --resume-changes-recipe: the segment before the change
            out.append((f"{prefix}{model}, {_stage_name(recipe)} before its recipe changed", entry, own))
        else:
            out.append((f"{prefix}{model}, {_stage_name(recipe)}", entry, own))
    return out


def _changes(changed: Any) -> str:
    """``--resume-changes-recipe``'s record as text: ``lr` 0.1 → 0.05, ...``."""
    if not isinstance(changed, Mapping):
        return ""
    return ", ".join(f"`{name}` {_value(change.get('checkpoint'))} → {_value(change.get('now'))}"
                     for name, change in changed.items() if isinstance(change, Mapping))


def _stage_view(number: int, label: str, recipe: Mapping[str, Any], epoch: Any, command: Any,
                role: str = "", own: bool = True, changed: Any = None) -> Dict[str, Any]:
    # "resume" is where a resumed segment started from, not part of the recipe (the command omits it too)
    full = {k: v for k, v in recipe.items() if v is not None and k not in ("notes", "differences_from_paper", "resume")}
    return dict(
        number=number, label=label, role=role, own=own, epoch=epoch, epochs=recipe.get("epochs"), command=command,
        built="", changed=_changes(changed),
        summary=[(k, _value(recipe[k])) for k in _RECIPE_SUMMARY_KEYS if recipe.get(k) is not None],
        full=full, yaml=yaml.safe_dump(full, sort_keys=True, default_flow_style=False) if full else "",
    )


def _annotate_build(stages: List[Dict[str, Any]], zoo: Any) -> None:
    """Give each stage of this entry's own chain (not a teacher's) what the zoo build recorded about
    it: training time (summed epoch times, kept across resumes), speed, seed and the commits it was
    trained from. Matched in order; left out when the counts differ."""
    built = [s for s in (zoo.get("stages") if isinstance(zoo, Mapping) else None) or [] if isinstance(s, Mapping)]
    own = [stage for stage in stages if stage["own"]]
    if not built or len(built) != len(own):
        return
    for stage, record in zip(own, built):
        parts = []
        if record.get("train_time_s") is not None:
            device = stage["full"].get("device")
            parts.append(f"trained for {_duration(record['train_time_s'])}" + (f" on {device}" if device else "")
                         + " (summed epoch times)")
        if record.get("train_images_per_sec"):
            parts.append(f"{record['train_images_per_sec']:.0f} images/s")
        if record.get("seed") is not None:
            parts.append(f"seed {record['seed']}")
        commits = [str(c)[:7] for c in record.get("commits") or []]
        if commits:
            parts.append(f"code at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}")
        stage["built"] = "; ".join(parts)


def _training_stages(lineage: Any, recipe: Mapping[str, Any], epoch: Any, command: Any,
                     ) -> Tuple[List[Dict[str, Any]], Optional[Mapping[str, Any]], str]:
    """Every stage's view, oldest first (this checkpoint last), and the experts-stage recipe the
    paper's recipe is compared with (``None`` when it is not recorded), with its label."""
    ancestors = _flatten_lineage(lineage)
    stages = [_stage_view(i, label, portable_paths(dict(entry.get("recipe") or {})), entry.get("epoch"),
                          start_command(portable_paths(entry.get("command"))), str(entry.get("role") or ""), own,
                          entry.get("changed"))
              for i, (label, entry, own) in enumerate(ancestors, start=1)]
    stages.append(_stage_view(len(stages) + 1, f"this checkpoint, {_stage_name(recipe)}", recipe, epoch, command))
    if recipe.get("stage") in (None, "experts"):
        return stages, recipe, ""
    main_chain = [(i, entry) for i, (_, entry, own) in enumerate(ancestors, start=1)
                  if own and entry.get("role") == "initial_checkpoint"]
    for number, entry in main_chain:
        stage_recipe = entry.get("recipe") if isinstance(entry.get("recipe"), Mapping) else {}
        if stage_recipe.get("stage") in (None, "experts"):
            return stages, stage_recipe, f"stage {number} ({_stage_name(stage_recipe)}): "
    return stages, None, ""


def _run_facts(checkpoint: Mapping[str, Any], recipe: Mapping[str, Any], info: Mapping[str, Any]) -> List[str]:
    """The card's one-line facts of the run: checkpoint epoch and selection, seed, training time, code."""
    facts = []
    if checkpoint.get("epoch") is not None:
        facts.append(f"**Checkpoint:** epoch {checkpoint['epoch']}"
                     + (f" of {recipe['epochs']}" if recipe.get("epochs") else "")
                     + (f" of the {recipe['stage']} stage" if recipe.get("stage") not in (None, "experts") else "")
                     + (f", selected by `{recipe['select_by']}`" if recipe.get("select_by") else "") + ".")
    seed = info.get("seed", recipe.get("seed"))
    if seed is not None:
        facts.append(f"**Seed:** {seed}.")
    wall = next((info[k] for k in _WALL_TIME_KEYS if info.get(k) is not None), None)
    if wall is not None:
        facts.append(f"**Training time (this stage):** {_duration(wall)}"
                     + (f" on {info['device']}" if info.get("device") else "") + ".")
    if checkpoint.get("version"):
        facts.append(f"**Code:** timm-longtail {checkpoint['version']}.")
    return facts


def _dig(value: Any, keys: Sequence[Any], where: str) -> Any:
    """``value[k0][k1]...`` (keys of mappings, indices of lists); one clear error where one is missing."""
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise UserInputError(f"{where} has no {'.'.join(map(str, keys))}: is it the summary of a complete "
                                 f"run?") from None
    return value


def _read_summary(path: Path) -> Optional[Dict[str, Any]]:
    """A committed JSON summary, None when it is not there."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot read {path}: {error}") from None


def load_reference_run(reference: Mapping[str, Any], key: str, checkout: Optional[Path] = None) -> Dict[str, Any]:
    """One of ``reference.yaml``'s ``reference_runs`` with its figures read from its committed summary:
    ``top1`` per forward mode, ``epochs`` and our ``spread`` (empty, ``committed`` False, while the file
    is not in the checkout: the run is still under way)."""
    runs = reference.get("reference_runs") or {}
    if key not in runs:
        raise UserInputError(f"reference.yaml has no reference run {key!r} (it has {', '.join(runs)})")
    run = dict(runs[key], key=key)
    summary = _read_summary(Path(checkout or repo_root()) / run["file"])
    if summary is None:
        return dict(run, committed=False, top1={}, epochs=None, spread=None)
    top1 = {mode: float(_dig(summary, keys, run["file"])) for mode, keys in run["top1"].items()}
    epochs = _dig(summary, run["epochs"], run["file"]) if run.get("epochs") else None
    return dict(run, committed=True, top1=top1, epochs=epochs, spread=_spread(run.get("spread"), checkout))


def _spread(spec: Optional[Mapping[str, Any]], checkout: Optional[Path]) -> Optional[Dict[str, Any]]:
    """A reference run's ``spread``: the seed-to-seed std of our run of its recipe and its seeds (None
    where not measured)."""
    summary = _read_summary(Path(checkout or repo_root()) / spec["file"]) if spec else None
    if summary is None:
        return None
    return dict(file=spec["file"], std=_dig(summary, spec["std"], spec["file"]),
                seeds=_dig(summary, spec["seeds"], spec["file"]), epochs=_dig(summary, spec["epochs"], spec["file"]))


def _run_figures(run: Mapping[str, Any]) -> str:
    """``"71.99 top-1"`` / ``"77.10 ensemble, 76.80 routed"`` (last epoch, after ``epochs`` epochs)."""
    figures = [f"{_pct(v)}" + (f" {m}" if len(run["top1"]) > 1 else "") for m, v in run["top1"].items()]
    return ", ".join(figures) + (" top-1" if len(run["top1"]) == 1 else "") + " (last epoch" + (
        f" of {run['epochs']}" if run.get("epochs") else "") + ")"


def _data_copy_view(reference: Mapping[str, Any], dataset_record: Any, method_key: str,
                    checkout: Path) -> Optional[Dict[str, Any]]:
    """What the card says about a model trained on one of ``reference.yaml``'s ``data_copies`` (matched
    by the data folder its checkpoint records): the copy, what it costs (``effect``: the reference run
    measured against its paper) and the reference run of the model's own method on the same data."""
    root = dataset_record.get("root") if isinstance(dataset_record, Mapping) else None
    copy = (reference.get("data_copies") or {}).get(portable_path(root)) if root else None
    if copy is None:
        return None
    view = dict(copy, effect_line="", anchor_lines=[])
    if copy.get("effect"):
        run = load_reference_run(reference, copy["effect"], checkout)
        paper, setting = run.get("paper") or {}, _run_setting(reference, run)
        if run["committed"] and paper.get("top1") is not None:
            value = next(iter(run["top1"].values()))
            view["effect_line"] = (
                f"{run['code']}, {setting}, built from this copy, ends at {_pct(value)} top-1 (last epoch"
                + (f" of {run['epochs']}" if run.get("epochs") else "") + f") against {_pct(paper['top1'])} in its "
                f"paper ({paper['source']}): {_pct(paper['top1'] - value)} points lower with the same code and "
                f"recipe (`{run['file']}`).")
        elif paper.get("top1") is not None:
            view["effect_line"] = (f"{run['code']}, {setting}, on this copy: pending (`{run['file']}` is not "
                                   f"committed yet); its paper gives {_pct(paper['top1'])} ({paper['source']}).")
    for key, run in (reference.get("reference_runs") or {}).items():
        if method_key in (run.get("anchors") or []):
            run = load_reference_run(reference, key, checkout)
            figures = (f"{_run_figures(run)}, `{run['file']}`" if run["committed"]
                       else f"pending (`{run['file']}` is not committed yet)")
            view["anchor_lines"].append(f"{run['code']}, {_run_setting(reference, run)}: {figures}.")
    return view


def _run_setting(reference: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """``"CIFAR ResNet-32, 3 experts, on CIFAR-10-LT (imbalance factor 100)"``."""
    dataset = ((reference.get("datasets") or {}).get(run["dataset"]) or {}).get("name", run["dataset"])
    return f"{run['model']}, on {dataset}"


def _lossless_view(info: Mapping[str, Any], weights_sha256: str, load_name: str,
                   data_copy: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The card's view of ``results.json``'s lossless-subset figures (``None`` when it has none; a note
    only when they were measured on other weights than these)."""
    block = info.get(LOSSLESS_KEY)
    if not isinstance(block, Mapping):
        return None
    if block.get("weights_sha256") != weights_sha256:
        return dict(stale=True)
    stored_as = data_copy.get("stored_as") if data_copy else None
    rows = [dict(mode=mode, lossless=_pct(r["top1_lossless"]), dataset=_pct(r["top1_dataset"]),
                 delta=f"{r['delta']:+.2f} ({r['delta_ci95'][0]:+.2f} to {r['delta_ci95'][1]:+.2f})",
                 only=f"{r['lossless_only']} / {r['dataset_only']}")
            for mode, r in block["result"].items()]
    row_range = block.get("row_range")
    which = (f"the first {block['num_samples']:,} {block['split']} images" if row_range and row_range[0] == 0
             else f"{block['num_samples']:,} {block['split']} images")
    command = (f"python analyze.py lossless-subset --model {load_name} --pretrained --dataset {block['dataset']} "
               + (f"--data-dir {block['data_dir']} " if block.get("data_dir") else "")
               + f"--lossless-dir {block['lossless_dir']}")
    return dict(stale=False, rows=rows, summary=[r for r in rows if r["mode"] in ("ensemble", "routed")],
                stored=f"as {stored_as}" if stored_as else "as its data stores them",
                stored_short=stored_as or "its data's copy", which=which, n=f"{block['num_samples']:,}",
                lossless_dir=block["lossless_dir"], command=command)


def build_card_context(
        *,
        model: Any,
        checkpoint: Mapping[str, Any],
        results: RunResults,
        tag: str,
        repo_id: str,
        weights_sha256: str,
        registered_name: Optional[str],
        reference: Mapping[str, Any],
        analysis: Optional[Mapping[str, Any]] = None,
        checkout: Optional[Path] = None,
) -> Dict[str, Any]:
    """Everything the template shows, gathered from the model, its checkpoint and its results
    (and the folder's card figures, :func:`~timm_longtail.analysis.card_figures.load_card_figures`);
    ``checkout`` holds the reference runs' summaries (default: the source checkout)."""
    model_name = checkpoint["model_name"]
    method_key, arch = parse_model_name(model_name)
    method = reference["methods"][method_key]
    dataset = dict((reference.get("datasets") or {}).get(_dataset_of(tag)) or {})
    dataset.setdefault("name", tag)
    dataset.setdefault("description", f"Dataset tag `{tag}`.")
    dataset.setdefault("terms", "see the dataset's own terms.")
    info = portable_paths(dict(results.info))
    recipe = dict(checkpoint.get("recipe") or {})
    for key, value in (info.get("recipe") or {}).items():
        recipe.setdefault(key, value)
    recipe = portable_paths(recipe)
    counts = [int(c) for c in checkpoint["class_counts"]]
    shot_rule, split_sizes = _shot_split(info, counts)
    num_experts = int(getattr(model, "num_experts", 1))
    paper_rows = _paper_rows(reference, method_key, arch, num_experts, tag)
    cfg = model.pretrained_cfg
    eval_split = str(info.get("split") or info.get("eval_split") or recipe.get("test_split") or "test")
    license_id = str(cfg.get("license") or "apache-2.0")

    run_facts = _run_facts(checkpoint, recipe, info)
    command = start_command(portable_paths(checkpoint.get("command")) or info.get("command") or recipe.get("command"))
    eval_command = info.get("command") if start_command(info.get("command")) != command else None
    stages, compared, compared_label = _training_stages(checkpoint.get("lineage"), recipe, checkpoint.get("epoch"),
                                                        command)
    _annotate_build(stages, info.get("zoo"))
    result_rows = [dict(
        mode=row.mode, top1=_pct(row.top1), top5=_pct(row.top5), many=_pct(row.top1_many),
        medium=_pct(row.top1_medium), few=_pct(row.top1_few),
        macs=_macs(row.macs_per_image if row.macs_per_image is not None
                   else (row.flops_per_image / 2 if row.flops_per_image is not None else None)),
        experts_used=_histogram(row.experts_used_hist), published=_published_for(row, paper_rows),
    ) for row in results.modes]
    paper_view = [dict(
        source=row["source"], mode={"expert": "single expert"}.get(row["mode"], row["mode"]),
        top1=f"{row['top1']:.1f}", many=_fmt1(row.get("many")), medium=_fmt1(row.get("medium")),
        few=_fmt1(row.get("few")), gmacs=f"{row['gmacs']:.3g}" if row.get("gmacs") is not None else "—",
        note=row.get("note", ""),
    ) for row in paper_rows]
    router_trained = bool(getattr(model, "router_trained", False))
    data_copy = _data_copy_view(reference, checkpoint.get("dataset"), method_key, Path(checkout or repo_root()))
    lossless = _lossless_view(info, weights_sha256, registered_name or f"hf-hub:{repo_id}", data_copy)
    card_data = build_card_data(repo_name=repo_id.split("/", 1)[1], method=method_key, dataset=dataset, tag=tag,
                                eval_split=eval_split, results=results, license_id=license_id,
                                method_name=method["name"], data_copy=data_copy)
    return dict(
        front_matter=card_data.to_yaml() + "\n",
        repo_id=repo_id, repo_name=repo_id.split("/", 1)[1], model_name=model_name, registered_name=registered_name,
        method=method, arch_name=(reference.get("architectures") or {}).get(arch, arch),
        num_experts=num_experts, num_classes=int(model.num_classes),
        num_params=f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M",
        has_router=bool(getattr(model, "has_router", False)), router_trained=router_trained,
        forward_modes=[f"`{m}`" for m in model.forward_modes()],
        default_mode="routed" if router_trained else "ensemble",
        input_size="x".join(str(s) for s in cfg.get("input_size", ())[1:]),
        mean=_value(cfg.get("mean")), std=_value(cfg.get("std")), crop_pct=cfg.get("crop_pct"),
        interpolation=cfg.get("interpolation"), weights_sha256=weights_sha256,
        dataset=dataset, num_train_images=f"{sum(counts):,}", max_count=max(counts), min_count=min(counts),
        imbalance=f"{max(counts) / max(min(counts), 1):.0f}", shot_rule=shot_rule, split_sizes=split_sizes,
        eval_split=eval_split, num_eval_samples=_count(info.get("num_samples")), run_facts=run_facts,
        stages=stages, eval_command=eval_command,
        differences=_differences(reference, method_key, dataset.get("family"), recipe, info, bool(paper_rows),
                                 dataset["name"], compared=compared, compared_label=compared_label),
        results=result_rows, any_flops=any(r.flops_per_image is not None for r in results.modes),
        paper_rows=paper_view, license_name={"apache-2.0": "Apache-2.0"}.get(license_id, license_id),
        analysis=analysis, data_copy=data_copy, lossless=lossless,
    )


def _count(value: Any) -> Optional[str]:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else (str(value) if value else None)


def _fmt1(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.1f}"


def render_card(context: Mapping[str, Any], cards_dir: Optional[Path] = None, template: str = TEMPLATE_NAME) -> str:
    """Fill ``hub_cards/templates/<template>`` (the trained models' card by default); fails loudly on
    any name the context lacks.

    Not ``huggingface_hub.ModelCard.from_template``: it renders with jinja2's defaults (a missing name
    renders empty, no ``trim_blocks``), where this template needs ``StrictUndefined`` and whitespace control.
    """
    import jinja2

    templates = Path(cards_dir or checkout_cards_dir()) / "templates"
    if not (templates / template).is_file():
        raise UserInputError(f"model card template not found at {templates / template}: run from a "
                             f"timm-longtail source checkout, or pass --cards-dir pointing at its hub_cards/ folder")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    text = env.get_template(template).render(**context)
    return re.sub(r"\n{3,}", "\n\n", text)

"""A reference checkpoint as a Hub-ready folder: ``model.safetensors``, timm's ``config.json`` and a
card that says where the weights came from (``python -m timm_longtail.convert``).

The folder has the layout of ``python -m timm_longtail.hub export``'s, so ``load_local_folder``,
``local-dir:`` and ``hub push`` take it as they are. The model name comes from the file's tensors
(:mod:`.layouts`), the tag from what RIDE's config records (its data loader, distillation, the
experts stage's epochs when they differ from the paper's recipe) behind the code's prefix (``ride_``,
``ncl_``, ``ldamdrw_``, as timm's ``tv_`` names the code that trained a weight). NCL's and
LDAM-DRW's files do not say what data they saw: ``--tag`` then names it, and is checked against the
file's class count (and against RIDE's own record when there is one).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import timm
import torch

from .._paths import cards_dir as checkout_cards_dir
from ..data.longtail import longtail_class_counts
from ..errors import OutputWriteError, UserInputError
from ..files import apply_umask, json_safe, sha256_of_file
from ..hub.card import build_card_data, load_reference, render_card
from ..hub.export import _replace_folder, _write_config, _write_weights  # the export folder's own writers
from ..models._cfgs import DATASET_TAGS, dataset_tag
from ..models.weights import CONFIG_SHA256_KEY, WEIGHTS_FILENAME
from .checkpoint import ReferenceCheckpoint, require_reference_checkpoint
from .layouts import map_state_dict, reference_model_kwargs

__all__ = ["ConvertResult", "convert_checkpoint", "derive_tag"]

PathLike = Union[str, os.PathLike]
NCL_COS_SCALE = {"inat2018": 32.0}
"""NCL's cosine-head scale where its config sets one (``CLASSIFIER.COS_SCALE``; the default is 16,
which our ``nclpp_*`` ImageNet models use): the checkpoint does not store it."""


@dataclass(frozen=True)
class ConvertResult:
    folder: Path
    model_name: str
    tag: str
    sha256: str


def _dataset_part(record: Mapping[str, Any]) -> str:
    name = record["name"]
    if name in ("cifar10_lt", "cifar100_lt"):
        return f"{name}_if{int(round(record['imbalance_factor']))}"
    return name


def derive_tag(reference: ReferenceCheckpoint, cards: Mapping[str, Any]) -> Optional[str]:
    """``<code prefix>_[distill_][e<N>_]<dataset>`` from what the file records; ``None`` when it does
    not record its training data (module docstring)."""
    record = reference.dataset()
    if record is None:
        return None
    dataset = _dataset_part(record)
    lineage = reference.lineage()
    parts = [cards["reference_codes"][reference.layout.source]["tag_prefix"]]
    if lineage.get("distilled_from"):
        parts.append("distill")
    epochs = lineage.get("experts_stage_epochs") or (lineage.get("epoch") if not reference.layout.router else None)
    recipes = cards.get("paper_recipes", {}).get("ride", {})
    recipe = recipes.get("cifar" if dataset.startswith("cifar") else dataset, {})
    if epochs and recipe.get("epochs") and int(epochs) != int(recipe["epochs"]):
        parts.append(f"e{int(epochs)}")
    return "_".join(parts + [dataset])


def _check_tag(tag: str, reference: ReferenceCheckpoint) -> str:
    """The tag's dataset part, checked against the file's classes and its own record."""
    try:
        dataset = dataset_tag(tag)
    except KeyError:
        raise UserInputError(f"tag {tag!r} names no dataset of {sorted(DATASET_TAGS)} (e.g. ncl_cifar100_lt_if100)")
    classes = DATASET_TAGS[dataset]["num_classes"]
    if classes != reference.layout.num_classes:
        raise UserInputError(f"tag {tag!r} is {dataset} ({classes} classes), but the file holds "
                             f"{reference.layout.num_classes} classes")
    recorded = reference.dataset()
    if recorded is not None and _dataset_part(recorded) != dataset:
        raise UserInputError(f"tag {tag!r} says {dataset}, but the file's own config records {_dataset_part(recorded)}")
    return dataset


def _zoo_entry(reference: ReferenceCheckpoint, dataset: str, cards: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The authors' model-zoo entry this file is, when its facts single one out."""
    if reference.layout.source != "ride":
        return None
    lineage = reference.lineage()
    epochs = lineage.get("experts_stage_epochs") or lineage.get("epoch")
    found = [entry for entry in cards.get("reference_model_zoo", [])
             if entry["dataset"] == dataset and entry["arch"] == reference.layout.arch
             and entry["experts"] == reference.layout.num_experts and entry["router"] == reference.layout.router
             and entry["distill"] == bool(lineage.get("distilled_from"))]
    if len(found) > 1:  # the iNat "longer training" entries differ from the others by their epochs only
        found = [entry for entry in found if epochs and int(epochs) == entry["epochs"]] or found[:0]
    return found[0] if len(found) == 1 else None


def _epochs(count: int) -> str:
    return f"{count} epoch{'' if count == 1 else 's'}"


def _lineage_lines(lineage: Mapping[str, Any]) -> List[str]:
    lines = []
    if lineage.get("stage"):
        lines.append(f"**Stage:** {lineage['stage']}" + (f", {lineage['arch_class']}" if lineage.get("arch_class") else ""))
    if lineage.get("epoch") is not None:
        lines.append(f"**Saved after epoch:** {lineage['epoch']}"
                     + (f" of its config's {lineage['epochs_in_config']}" if lineage.get("epochs_in_config") else ""))
    if lineage.get("started_from"):
        lines.append(f"**Started from:** `{lineage['started_from']}`"
                     + (f" (the experts stage, {_epochs(lineage['experts_stage_epochs'])})" if lineage.get("experts_stage_epochs") else ""))
    if lineage.get("distilled_from"):
        teacher = lineage["distilled_from"]
        lines.append(f"**Distilled from:** a {teacher.get('experts')}-expert {teacher.get('arch')}"
                     + (f" (`{teacher['checkpoint']}`)" if teacher.get("checkpoint") else ""))
    if lineage.get("best_epoch") is not None:
        lines.append(f"**NCL's best epoch (by its test accuracy):** {lineage['best_epoch']}")
    return lines


def _cifar_counts(dataset: str) -> Optional[List[int]]:
    """The training class counts of a CIFAR-LT tag: the construction RIDE's, LDAM-DRW's and our code
    share (``n_i = int(n_max * IF^(-i / (C - 1)))``); ``None`` for the other datasets (their
    training lists are not here)."""
    if not dataset.startswith("cifar"):
        return None
    classes = DATASET_TAGS[dataset]["num_classes"]
    return longtail_class_counts(50000 // classes, classes, float(dataset.rsplit("_if", 1)[1]))


def _row_view(row: Mapping[str, Any]) -> Dict[str, str]:
    def pct(key: str) -> str:
        return "-" if row.get(key) is None else f"{row[key]:.2f}"
    hist = row.get("experts_used_hist")
    return dict(mode=row["forward_mode"], top1=pct("top1"), top5=pct("top5"), many=pct("top1_many"),
                medium=pct("top1_medium"), few=pct("top1_few"), gmacs=f"{row['macs_per_image'] / 1e9:.4f}",
                experts_used="/".join(map(str, hist)) if hist else "-")


def _evaluate(model: torch.nn.Module, dataset: str, data_dir: Optional[str], num_samples: Optional[int],
              device: str, workers: int) -> List[Dict[str, Any]]:
    """Every forward mode on the tag's test split (``--eval``), as validate.py measures it."""
    from ..data import ShotSplit, build_dataset, create_eval_transform, create_loader
    from ..data.splits import dataset_targets, eval_cap
    from ..evaluation import evaluate_model
    from ..evaluation.setup import eval_input_size

    name = "cifar10_lt" if dataset.startswith("cifar10_") else "cifar100_lt" if dataset.startswith("cifar100_") else dataset
    factor = float(dataset.rsplit("_if", 1)[1]) if "_if" in dataset else None
    test = build_dataset(name, data_dir, "test", imbalance_factor=factor)
    train_counts = build_dataset(name, data_dir, "train", imbalance_factor=factor).class_counts
    test.transform = create_eval_transform(model)
    rows = test if num_samples is None else torch.utils.data.Subset(test, eval_cap(dataset_targets(test), num_samples).tolist())
    loader = create_loader(rows, batch_size=256, shuffle=False, num_workers=workers)
    return evaluate_model(model, loader, "all", class_counts=train_counts, class_counts_source="dataset",
                          input_size=eval_input_size(model, None), shot_split=ShotSplit(), device=device,
                          progress=False, context=dict(model=getattr(model, "default_cfg", {}).get("architecture"),
                                                       dataset=name, split="test"))


def convert_checkpoint(file: PathLike, out: PathLike, *, model_name: Optional[str] = None, tag: Optional[str] = None,
                       overwrite: bool = False, eval_data_dir: Optional[str] = None, eval_samples: Optional[int] = None,
                       device: str = "cpu", workers: int = 2, cards_dir: Optional[PathLike] = None) -> ConvertResult:
    """Write ``out`` (``model.safetensors``, ``config.json``, ``README.md``; with ``eval_data_dir`` also
    ``results.json``) for one reference checkpoint. Nothing is written on any error."""
    cards_dir = Path(cards_dir) if cards_dir else checkout_cards_dir()
    cards = load_reference(cards_dir)
    reference = require_reference_checkpoint(file)
    layout = reference.layout
    derived = derive_tag(reference, cards)
    tag = tag or derived
    if not tag:
        prefix = cards["reference_codes"][layout.source]["tag_prefix"]
        raise UserInputError(f"{file} does not record its training data: pass --tag, e.g. {prefix}_cifar100_lt_if100 "
                             f"({layout.describe()})")
    dataset = _check_tag(tag, reference)
    name = model_name or layout.model_name()
    kwargs = reference_model_kwargs(name, layout, {}, where=str(file))
    if layout.family == "nclpp" and layout.stem == "imagenet":
        kwargs["head_scale"] = NCL_COS_SCALE.get(dataset, 16.0)
    model = timm.create_model(name, **kwargs).eval()
    model.load_state_dict(map_state_dict(reference.state_dict, model.state_dict(), layout))
    rows = _evaluate(model, dataset, eval_data_dir, eval_samples, device, workers) if eval_data_dir else []

    code = cards["reference_codes"][layout.source]
    source = dict(file=Path(file).name, sha256=sha256_of_file(file), layout=layout.describe())
    registered = DATASET_TAGS[dataset]
    counts = _cifar_counts(dataset)
    data_cfg = {k: registered[k] for k in ("input_size", "mean", "std", "crop_pct", "interpolation")}
    section = dict(repo_name=f"{name}.{tag}", tag=tag, method=name.split("_", 1)[0], forward_modes=model.forward_modes(),
                   router_trained=bool(getattr(model, "router_trained", False)),
                   converted_from=dict(source, repository=code["repo"], **reference.lineage()))
    out = Path(out)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        _write_weights(model, tmp / WEIGHTS_FILENAME, dict(model_name=name, model_kwargs=kwargs, tag=tag,
                                                           converted_from=section["converted_from"]))
        sha = sha256_of_file(tmp / WEIGHTS_FILENAME)
        section[CONFIG_SHA256_KEY] = sha
        _write_config(tmp / "config.json", model, name, json_safe(kwargs),
                      dict(class_counts=counts, timm_longtail=json_safe(section), pretrained_cfg=dict(tag=tag, license=code["license"], **data_cfg)))
        if rows:
            (tmp / "results.json").write_text(json.dumps(json_safe(rows), indent=2) + "\n", encoding="utf-8")
        card = _card_context(cards, reference, model, name, kwargs, tag, dataset, code, source, sha, rows, eval_samples)
        (tmp / "README.md").write_text(render_card(card, cards_dir, template="converted_card.md.j2"), encoding="utf-8")
        apply_umask(tmp)
        _replace_folder(tmp, out, overwrite)
    except OSError as error:
        kept = "the previous folder is unchanged" if out.exists() else "nothing was written"
        raise OutputWriteError(f"could not write {out} ({error.strerror or error}): {kept}") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ConvertResult(folder=out, model_name=name, tag=tag, sha256=sha)


def _card_context(cards, reference: ReferenceCheckpoint, model, name: str, kwargs: Mapping[str, Any], tag: str,
                  dataset: str, code: Mapping[str, Any], source: Mapping[str, Any], sha: str, rows, eval_samples):
    import yaml

    family = name.split("_", 1)[0]
    arch = reference.layout.arch
    data = cards["datasets"].get(dataset, {})
    registered = DATASET_TAGS[dataset]
    front = build_card_data(repo_name=f"{name}.{tag}", method=family, dataset=dict(data, hub_id=None), tag=tag,
                            eval_split="test", results=_NoResults(), license_id=code["license"],
                            method_name=cards["methods"][family]["name"]).to_dict()
    front["tags"] = list(front.get("tags") or []) + ["converted-checkpoint"]
    images = f"{eval_samples} test images" if eval_samples else "the test split"
    return dict(
        front_matter=yaml.safe_dump(front, sort_keys=False), repo_name=f"{name}.{tag}", method=cards["methods"][family],
        arch_name=cards["architectures"].get(arch, arch), num_experts=reference.layout.num_experts,
        num_classes=reference.layout.num_classes, code=code, license_id=code["license"], source=source,
        lineage_lines=_lineage_lines(reference.lineage()), model_name=name,
        model_kwargs=", ".join(f"{k}={v!r}" for k, v in kwargs.items()), weights_sha256=sha,
        zoo_entry=_zoo_entry(reference, dataset, cards), rows=[_row_view(r) for r in rows],
        eval_statement=f"Measured with timm-longtail's evaluation on {images} of {data.get('name', dataset)}, every forward "
                       f"mode, this machine's CPU.", forward_modes=model.forward_modes(),
        input_size="x".join(map(str, registered["input_size"][1:])), mean=registered["mean"], std=registered["std"],
        dataset_key=dataset, same_preprocessing=reference.layout.source != "ncl")


class _NoResults:
    """No measured rows: the card's metadata then carries no ``model-index``."""
    modes: tuple = ()


def official_checkpoints_table(cards: Mapping[str, Any]) -> str:
    """README's "Official checkpoints" table, one row per entry of the RIDE authors' model zoo
    (``reference_model_zoo`` in ``hub_cards/reference.yaml``): their figures, labelled as theirs, and
    the model and tag the converter gives such a file (a file recording the repository's recipe
    epochs; the longer iNaturalist runs carry ``e<N>_``)."""
    names = {d: cards["datasets"].get(d, {}).get("name", d) for d in {e["dataset"] for e in cards["reference_model_zoo"]}}
    recipes = cards["paper_recipes"]["ride"]
    prefix = cards["reference_codes"]["ride"]["tag_prefix"]
    lines = ["| dataset | authors' entry | experts | authors' top-1 / many / medium / few | timm model | tag | router | command |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in cards["reference_model_zoo"]:
        recipe_epochs = recipes.get("cifar" if entry["dataset"].startswith("cifar") else entry["dataset"], {}).get("epochs")
        parts = [prefix] + (["distill"] if entry["distill"] else [])
        if recipe_epochs and entry["epochs"] > recipe_epochs:
            parts.append(f"e{entry['epochs']}")
        tag = "_".join(parts + [entry["dataset"]])
        figures = " / ".join(f"{entry[k]}" for k in ("top1", "many", "medium", "few"))
        model = f"ride_{entry['arch']}_{entry['experts']}e"
        download = f"{entry['folder']}/<file>.pth" if entry.get("folder") else "<file>.pth"
        lines.append(f"| {names[entry['dataset']]} | {entry['label']} | {entry['experts']} | {figures} | `{model}` | "
                     f"`{tag}` | {'yes' if entry['router'] else 'no'} | "
                     f"`python -m timm_longtail.convert {download} --out {model}.{tag}` |")
    return "\n".join(lines)

"""Turn a ``train.py`` checkpoint and its results into a Hub-ready folder.

The folder holds exactly what a Hub repo needs: ``model.safetensors`` (weights only, router
included, with the model name, arguments and class list in its metadata), ``config.json`` in
timm's format (written by timm's own ``save_config_for_hf``, plus our training class counts and
the weights' SHA-256) and ``README.md``, the model card. Everything is written into a temporary
folder beside the destination and renamed into place, so a failure never leaves half an export.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import timm
import torch
from safetensors.torch import save
from timm.models import get_pretrained_cfg
from timm.models._hub import save_config_for_hf

from .._paths import cards_dir as checkout_cards_dir, portable_paths
from ..analysis.card_figures import load_card_figures, write_card_figures
from ..analysis.lossless import measure_lossless_subset
from ..checkpoint import build_model_from_checkpoint, commit_of_version, load_weights_file
from ..data import ShotSplit, build_dataset, create_eval_transform, create_loader
from ..evaluation.setup import dataset_from_record
from ..errors import OutputWriteError, UserInputError
from ..files import (
    apply_umask, atomic_write, atomic_write_json, atomic_write_text, json_safe, replace_dir, sha256_of_file,
)
from ..models import HF_ORG, hub_repo_id
from ..data.benchmarks import BENCHMARKS
from ..models.weights import CONFIG_SHA256_KEY, WEIGHTS_FILENAME
from .card import build_card_context, load_reference, render_card
from .results import LOSSLESS_KEY, RunResults, load_results

__all__ = ["ExportResult", "export_checkpoint", "record_card", "rewrite_card", "table_entry",
           "write_folder_figures", "write_folder_lossless_subset"]

PathLike = Union[str, os.PathLike]
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONSTRUCTED_LT = tuple(name for name, row in BENCHMARKS.items() if row.is_benchmark and row.constructed)
_FIXED_SPLIT = tuple(name for name, row in BENCHMARKS.items() if row.is_benchmark and not row.constructed)
_DATA_CFG_KEYS = ("mean", "std", "input_size", "crop_pct", "crop_mode", "interpolation")
# The dataset part that ends a benchmark tag (after an optional recipe prefix such as ``distill_``): a long tail
# built with an imbalance factor, or a benchmark with a fixed split.
_BENCHMARK_TAG = re.compile(rf"(?:^|_)(?P<tag>(?:{'|'.join(_CONSTRUCTED_LT)})_if\d+(?:\.\d+)?"
                            rf"|{'|'.join(_FIXED_SPLIT)})$")


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what to record once it is pushed."""

    folder: Path
    repo_id: str
    model_name: str
    tag: str
    sha256: str
    size: int = 0
    commit: Optional[str] = None
    """Git commit the checkpoint was trained from (from its recorded code version), when known."""

    @property
    def repo_name(self) -> str:
        return self.repo_id.split("/", 1)[1]


def table_entry(result: ExportResult) -> str:
    """The :func:`~timm_longtail.models.weights.record_published` call that publishes this export."""
    return (f"record_published({result.repo_name!r}, {result.sha256!r}, {result.size}, "
            f"{result.commit or '<commit it was trained from>'!r})")


def _trained_on_demo(checkpoint: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
    for dataset in (checkpoint.get("dataset"), info.get("dataset")):
        name = dataset.get("name") if isinstance(dataset, Mapping) else dataset
        if name == "demo":
            return True
    return False


def _tag_from(name: Any, imbalance_factor: Any) -> Optional[str]:
    """``("cifar100_lt", 100)`` -> ``cifar100_lt_if100``; benchmarks with a fixed split keep their name."""
    if not isinstance(name, str) or not name:
        return None
    numeric = isinstance(imbalance_factor, (int, float)) and not isinstance(imbalance_factor, bool)
    if name in _CONSTRUCTED_LT and numeric:
        return BENCHMARKS[name].tag(imbalance_factor)
    return name


def _tag_of(checkpoint: Mapping[str, Any], info: Mapping[str, Any]) -> Optional[str]:
    """The dataset tag a checkpoint (or, failing that, its results) records, explicitly or by name and IF."""
    sources = ((checkpoint.get("dataset"), None), (info.get("dataset"), info.get("imbalance_factor")))
    for dataset, imbalance_factor in sources:
        if isinstance(dataset, Mapping):
            for key in ("tag", "pretrained_tag"):
                if isinstance(dataset.get(key), str) and dataset[key]:
                    return dataset[key]
            dataset, imbalance_factor = dataset.get("name"), dataset.get("imbalance_factor")
        tag = _tag_from(dataset, imbalance_factor)
        if tag:
            return tag
    return None


def _benchmark_of(tag: Optional[str]) -> Optional[str]:
    """The benchmark a tag names (``distill_cifar10_lt_if100.0`` -> ``cifar10_lt_if100``), or None."""
    match = _BENCHMARK_TAG.search(tag) if isinstance(tag, str) else None
    if match is None:
        return None
    name, _, imbalance = match.group("tag").rpartition("_if")
    return f"{name}_if{float(imbalance):g}" if name else match.group("tag")


def _check_tag(tag: str, checkpoint: PathLike, ckpt: Mapping[str, Any], info: Mapping[str, Any],
               num_classes: int) -> None:
    """A tag that names a benchmark must be the checkpoint's own: its dataset, imbalance factor and classes
    (a demo-set checkpoint's card would otherwise claim benchmark accuracy)."""
    benchmark = _benchmark_of(tag)
    if benchmark is None:
        return
    recorded = _tag_of(ckpt, info)
    trained_on = _benchmark_of(recorded) or recorded
    if trained_on is not None and trained_on != benchmark:
        raise UserInputError(f"--tag {tag} names {benchmark}, but {checkpoint} was trained on {trained_on}: "
                             f"export it under a tag of its own data")
    classes = BENCHMARKS[benchmark.split("_if")[0]].num_classes
    if classes != num_classes:
        raise UserInputError(f"--tag {tag} names {benchmark} ({classes} classes), but {checkpoint} has "
                             f"{num_classes} classes")


def _data_config(checkpoint: Mapping[str, Any], registered: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Preprocessing to record: the tag's registered cfg, overridden by what training recorded."""
    cfg: Dict[str, Any] = {}
    if registered:
        keys = _DATA_CFG_KEYS + ("pool_size", "license")
        cfg.update({k: registered[k] for k in keys if registered.get(k) is not None})
    for source in (checkpoint.get("data_config"), checkpoint.get("dataset")):
        if isinstance(source, Mapping):
            cfg.update({k: source[k] for k in _DATA_CFG_KEYS if source.get(k) is not None})
    for key in ("mean", "std", "input_size"):
        if key in cfg:
            cfg[key] = tuple(cfg[key])
    return cfg


def _write_weights(model: torch.nn.Module, path: Path, metadata: Mapping[str, Any]) -> None:

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    encoded = {k: json.dumps(json_safe(v)) for k, v in metadata.items()}  # checkpoint.load_checkpoint decodes them
    path.write_bytes(_sorted_header(save(state, metadata={"format": "pt", **encoded})))


def _sorted_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted: safetensors writes the header in
    hash order (it differs from process to process), so the same weights would get another SHA-256."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to 8-byte alignment
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def _replace_folder(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserInputError(f"output folder {out} already exists and is not empty: pass --overwrite or another --out")
    replace_dir(tmp, out)


def _export_target(checkpoint: PathLike, ckpt: Mapping[str, Any], run: RunResults, model_name: str,
                   tag: Optional[str], repo_id: Optional[str]) -> Tuple[str, str]:
    """The dataset tag and Hub repo of an export, checked (a demo-set run is refused for our org)."""
    derived_tag = not tag
    tag = tag or _tag_of(ckpt, run.info)
    if not tag:
        raise UserInputError("the checkpoint does not record its dataset tag: pass --tag (e.g. cifar100_lt_if100)")
    if not _TAG_RE.match(tag):
        raise UserInputError(f"tag {tag!r} must be letters, digits, '_' or '-' (it becomes part of the repo name)")
    repo_id = repo_id or hub_repo_id(model_name, tag)
    if not _REPO_RE.match(repo_id):
        raise UserInputError(f"repo id {repo_id!r} must look like 'org/name'")
    if derived_tag and _trained_on_demo(ckpt, run.info) and repo_id.split("/", 1)[0] == HF_ORG:
        raise UserInputError(
            f"{checkpoint} was trained on the embedded demo set (a small CIFAR-10-LT sample for smoke tests), "
            f"not on a benchmark: it cannot be published as {repo_id}. Train on a benchmark (e.g. cifar10_lt), "
            f"or export to a repo of your own with --repo-id <you>/<name>")
    return tag, repo_id


def _export_labels(ckpt: Mapping[str, Any], model: torch.nn.Module, run: RunResults,
                   results: PathLike) -> Tuple[List[int], List[str]]:
    """Training class counts and class names for the card and config, checked against the model and results."""
    counts = ckpt.get("class_counts")
    if not counts or len(counts) != model.num_classes:
        raise UserInputError(f"the checkpoint's class_counts ({len(counts or [])}) do not match the model's "
                             f"{model.num_classes} classes: the card and config need the training counts")
    names = ckpt.get("class_names") or [str(i) for i in range(model.num_classes)]
    if len(names) != model.num_classes:
        raise UserInputError(
            f"the checkpoint's class_names ({len(names)}) do not match the model's {model.num_classes} classes")
    for row in run.modes:
        if row.mode not in model.forward_modes():
            raise UserInputError(
                f"{results}: forward mode {row.mode!r} is not one of this model's modes {model.forward_modes()}")
    return list(counts), list(names)


def export_checkpoint(
        checkpoint: PathLike,
        results: PathLike,
        out: PathLike,
        *,
        tag: Optional[str] = None,
        repo_id: Optional[str] = None,
        overwrite: bool = False,
        cards_dir: Optional[PathLike] = None,
        card: bool = True,
) -> ExportResult:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` for one trained checkpoint.

    ``card=False`` leaves the card out, for a caller that renders it afterwards from the published
    folder (:func:`rewrite_card`, as the zoo does).

    ``tag`` names the training data (``cifar100_lt_if100``...; default: the checkpoint's
    ``dataset["tag"]``), giving the repo ``timm-longtail/<model>.<tag>`` unless ``repo_id`` is given.
    A checkpoint trained on the demo set has no tag of its own: without ``tag`` it is refused for
    ``timm-longtail/`` (one :class:`UserInputError`, nothing written).
    """
    run = load_results(results)  # cheap checks first: a bad results file should not cost a model build
    cards_dir = Path(cards_dir) if cards_dir else checkout_cards_dir()
    reference = load_reference(cards_dir) if card else None
    model, ckpt = build_model_from_checkpoint(checkpoint)
    model.eval()
    model_name = ckpt["model_name"]
    evaluated = str(run.info.get("model") or "")
    if evaluated and ":" not in evaluated and "/" not in evaluated and evaluated.split(".")[0] != model_name:
        raise UserInputError(f"{results} holds results of {evaluated!r}, but the checkpoint is a {model_name}")
    tag, repo_id = _export_target(checkpoint, ckpt, run, model_name, tag, repo_id)
    _check_tag(tag, checkpoint, ckpt, run.info, model.num_classes)
    counts, names = _export_labels(ckpt, model, run, results)

    registered_name = f"{model_name}.{tag}"
    registered = _registered_cfg(model_name, tag, repo_id)
    data_cfg = _data_config(ckpt, registered)
    model_kwargs = json_safe(dict(ckpt.get("model_kwargs") or {}))

    out = Path(out)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        weights = tmp / WEIGHTS_FILENAME
        _write_weights(model, weights, dict(model_name=model_name, model_kwargs=model_kwargs, tag=tag,
                                            class_counts=counts, class_names=names))
        sha = sha256_of_file(weights)
        section = dict(
            repo_name=repo_id.split("/", 1)[1], tag=tag, method=model_name.split("_", 1)[0],
            dataset=portable_paths(ckpt.get("dataset")),
            epoch=ckpt.get("epoch"), code_version=ckpt.get("version"), forward_modes=model.forward_modes(),
            router_trained=bool(getattr(model, "router_trained", False)),
            shot_split=run.info.get("shot_split") or run.info.get("shot_rule", "standard"),
            **{CONFIG_SHA256_KEY: sha},
        )
        _write_config(tmp / "config.json", model, model_name, model_kwargs,
                      dict(label_names=list(names), class_counts=[int(c) for c in counts],
                           timm_longtail=json_safe(section), pretrained_cfg=dict(tag=tag, **data_cfg)))
        if card:
            context = build_card_context(
                model=model, checkpoint=ckpt, results=run, tag=tag, repo_id=repo_id, weights_sha256=sha,
                registered_name=registered_name if registered else None, reference=reference,
                checkout=cards_dir.parent)
            (tmp / "README.md").write_text(render_card(context, cards_dir), encoding="utf-8")
        apply_umask(tmp)
        _replace_folder(tmp, out, overwrite)
    except OSError as error:  # disk full: the export is written aside, so the old folder stands
        kept = "the previous folder is unchanged" if out.exists() else "nothing was written"
        raise OutputWriteError(f"could not write {out} ({error.strerror or error}): {kept}") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(folder=out, repo_id=repo_id, model_name=model_name, tag=tag, sha256=sha,
                        size=(out / WEIGHTS_FILENAME).stat().st_size, commit=commit_of_version(ckpt.get("version")))


def _registered_cfg(model_name: str, tag: str, repo_id: str) -> Optional[Dict[str, Any]]:
    """The pretrained cfg timm registers for ``<model>.<tag>`` when the export goes to that cfg's repo."""
    try:  # timm raises for a tag the model does not register (e.g. a dataset without a pretrained cfg)
        registered = get_pretrained_cfg(f"{model_name}.{tag}")
    except RuntimeError:
        return None
    return registered.to_dict() if registered is not None and hub_repo_id(model_name, tag) == repo_id else None


def _write_config(path: Path, model: torch.nn.Module, model_name: str, model_kwargs: Mapping[str, Any],
                  model_config: Mapping[str, Any]) -> None:
    """timm's ``config.json`` writer, with our section and the class counts and names in ``model_config``."""
    try:
        save_config_for_hf(model, str(path), model_args=dict(model_kwargs), model_config=dict(model_config))
    except (ValueError, TypeError) as error:
        raise UserInputError(f"cannot write config.json for {model_name}: {error}") from None


def record_card(result: ExportResult, cards_dir: Optional[PathLike] = None, *, weights: bool = True) -> Path:
    """Copy an export to ``hub_cards/<model>.<tag>/``, the record of published weights: the card,
    ``config.json``, ``weights.json`` (repo id, SHA-256, size, commit) and, with ``weights=True``,
    ``model.safetensors`` itself, which ``pretrained=True`` then loads from a source checkout without
    the network once the table lists its SHA-256 (:func:`~timm_longtail.models.weights.record_published`)."""
    target = Path(cards_dir or checkout_cards_dir()) / result.repo_name
    names = ("README.md", "config.json") + ((WEIGHTS_FILENAME,) if weights else ())
    for name in names:  # each file whole (copied aside, then renamed); a full disk is one error line
        def copy(tmp: str, source: Path = result.folder / name) -> None:
            shutil.copyfile(source, tmp)
            apply_umask(tmp)

        atomic_write(target / name, copy)
    if weights and sha256_of_file(target / WEIGHTS_FILENAME) != result.sha256:
        raise UserInputError(f"{result.folder / WEIGHTS_FILENAME} changed after export: export it again")
    atomic_write_text(target / "weights.json", json.dumps(
        dict(repo_id=result.repo_id, file=WEIGHTS_FILENAME, sha256=result.sha256,
             size=(result.folder / WEIGHTS_FILENAME).stat().st_size, commit=result.commit),
        indent=2) + "\n")
    return target


def _folder_model(folder: Path, config: Mapping[str, Any]) -> torch.nn.Module:
    """The model an exported folder's ``config.json`` describes, router marked trained as recorded;
    the folder's weights, when present, must match the SHA-256 the config records (not loaded here)."""
    config_path, weights = folder / "config.json", folder / WEIGHTS_FILENAME
    section = config.get("timm_longtail") or {}
    if weights.is_file() and sha256_of_file(weights) != section.get(CONFIG_SHA256_KEY):
        raise UserInputError(f"{weights} does not match the SHA-256 in {config_path}: the card describes other weights")
    model_name, model_args = config.get("architecture"), dict(config.get("model_args") or {})
    try:
        model = timm.create_model(model_name, **model_args)
    except (RuntimeError, TypeError) as error:
        raise UserInputError(f"cannot create {model_name!r} from {config_path}: {error}") from None
    if section.get("router_trained") and hasattr(model, "mark_router_trained"):
        model.mark_router_trained()
    return model


def rewrite_card(folder: PathLike, cards_dir: Optional[PathLike] = None) -> Path:
    """Render ``README.md`` again for an exported or published folder from what the folder holds:
    ``config.json`` (model, classes, dataset, epoch, code version), ``results.json`` (the numbers and
    the final stage's recipe, lineage and command) and the weights when present (SHA-256 checked
    against ``config.json``). For a card template or reference change after the training runs are
    gone; the weights and results are untouched."""
    folder = Path(folder)
    config_path, results_path = folder / "config.json", folder / "results.json"
    for path in (config_path, results_path):
        if not path.is_file():
            raise UserInputError(f"{folder} has no {path.name}: not an exported folder with its results")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        info = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot read {folder}: {error}") from None
    section = config.get("timm_longtail") or {}
    if not isinstance(info, dict) or not isinstance(info.get("recipe"), dict):
        raise UserInputError(f"{results_path} does not record the final stage's recipe (exported before results "
                             f"carried it): export it again from its checkpoint")
    sha = section.get(CONFIG_SHA256_KEY)
    model = _folder_model(folder, config)
    model_name, model_args = config.get("architecture"), dict(config.get("model_args") or {})
    tag = section.get("tag") or (config.get("pretrained_cfg") or {}).get("tag")
    repo_id = f"{HF_ORG}/{section['repo_name']}" if section.get("repo_name") else hub_repo_id(model_name, tag)
    checkpoint = dict(model_name=model_name, model_kwargs=model_args, class_counts=config.get("class_counts"),
                      class_names=config.get("label_names"), dataset=section.get("dataset"), epoch=section.get("epoch"),
                      version=section.get("code_version"), recipe=info["recipe"], lineage=info.get("lineage"),
                      command=info.get("command"))
    cards_dir = Path(cards_dir) if cards_dir else checkout_cards_dir()
    try:
        registered = timm.models.get_pretrained_cfg(f"{model_name}.{tag}")
    except RuntimeError:
        registered = None
    context = build_card_context(
        model=model, checkpoint=checkpoint, results=load_results(results_path), tag=tag, repo_id=repo_id,
        weights_sha256=sha, registered_name=f"{model_name}.{tag}" if registered is not None else None,
        reference=load_reference(cards_dir), analysis=load_card_figures(folder), checkout=cards_dir.parent)
    text = render_card(context, cards_dir)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")
        apply_umask(Path(tmp))

    return atomic_write(folder / "README.md", write)


def _folder_test_split(folder: Path, data_dir: Optional[PathLike], device: str) -> Tuple[torch.nn.Module, Any,
                                                                                         Dict[str, Any]]:
    """The folder's model with its weights (SHA-256 checked, on ``device``, in eval mode), its dataset's
    test split (eval transform set) and its ``config.json``; the dataset as ``config.json`` records it,
    its images from ``data_dir`` (none for the demo set)."""
    config_path, weights = folder / "config.json", folder / WEIGHTS_FILENAME
    if not config_path.is_file() or not weights.is_file():
        raise UserInputError(f"{folder} needs config.json and {WEIGHTS_FILENAME} to measure the card's figures")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    section = config.get("timm_longtail") or {}
    model = _folder_model(folder, config)
    load_weights_file(model, weights)
    model.to(device).eval()
    recorded = section.get("dataset") or {}
    name = recorded.get("name")
    if not name:
        raise UserInputError(f"{config_path} records no dataset: cannot tell which test split to measure on")
    if name != "demo" and data_dir is None:
        raise UserInputError(f"pass --data-dir: the folder of {name} (config.json keeps only its name)")
    name, data_dir, imbalance = dataset_from_record(recorded, name, None if data_dir is None else str(data_dir))
    dataset = build_dataset(name, data_dir, "test", imbalance_factor=imbalance, seed=int(recorded.get("seed") or 0))
    dataset.transform = create_eval_transform(model)
    return model, dataset, config


def write_folder_figures(folder: PathLike, data_dir: Optional[PathLike] = None, *, device: str = "cpu",
                         batch_size: int = 256, workers: int = 2, cards_dir: Optional[PathLike] = None) -> Path:
    """Measure the card's analyses (hardest negatives, calibration) for an exported or published
    folder on its dataset's test split, write ``<folder>/analysis/`` and render the card again.

    The model comes from the folder (``config.json`` + ``model.safetensors``, SHA-256 checked);
    the dataset from ``config.json``'s record, its images from ``data_dir`` (none for the demo set).
    """

    folder = Path(folder)
    model, dataset, config = _folder_test_split(folder, data_dir, device)
    section = config.get("timm_longtail") or {}
    rule = section.get("shot_split")
    shot_split = ShotSplit(rule["many_threshold"], rule["few_threshold"], rule["inclusive"]) \
        if isinstance(rule, dict) else ShotSplit.from_rule(rule or "standard")
    loader = create_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    write_card_figures(model, loader, config["class_counts"], shot_split, folder, title=section.get("repo_name") or
                       folder.name, split="test", device=device)
    return rewrite_card(folder, cards_dir)


def write_folder_lossless_subset(folder: PathLike, data_dir: Optional[PathLike], lossless_dir: PathLike, *,
                                 device: str = "cpu", batch_size: int = 256, workers: int = 2,
                                 cards_dir: Optional[PathLike] = None, render: bool = True) -> Dict[str, Any]:
    """Measure an exported or published folder's weights, every forward mode, on ``lossless_dir``'s
    original images and on the same rows of its dataset's test split (``analyze.py lossless-subset``'s
    numbers), record them in ``results.json`` under :data:`LOSSLESS_KEY` with the weights' SHA-256 and
    both folders, and (``render``) render the card again. Returns the recorded block."""
    folder = Path(folder)
    results_path = folder / "results.json"
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot read {results_path}: {error}") from None
    model, dataset, config = _folder_test_split(folder, data_dir, device)
    modes = model.forward_modes()
    measured = measure_lossless_subset(model, dataset, lossless_dir, modes, batch_size=batch_size,
                                       workers=workers, device=device)
    block = portable_paths(dict(
        analysis="lossless-subset", weights_sha256=(config.get("timm_longtail") or {}).get(CONFIG_SHA256_KEY),
        dataset=dataset.info.get("name"), split="test", data_dir=None if data_dir is None else str(data_dir),
        lossless_dir=str(lossless_dir), num_samples=measured["num_samples"], row_range=measured["row_range"],
        forward_modes=modes, result=measured["result"]))
    atomic_write_json(results_path, dict(results, **{LOSSLESS_KEY: block}))
    if render:
        rewrite_card(folder, cards_dir)
    return block

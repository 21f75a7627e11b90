"""What ``validate.py`` and ``analyze.py`` share: the model/data flags and the set-up they drive.

A model comes by name (``--model``, with ``--pretrained`` or a ``.safetensors`` ``--checkpoint``)
or from a train.py checkpoint; the dataset from the flags or, when they are left out, from what
the checkpoint recorded. Class counts (for the many/medium/few splits) come from the checkpoint
when it stores them, else from the dataset's training split. Every check that can reject the
input runs here, before anything is evaluated or written.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
from torch import nn
from torch.utils.data import Subset

from .._machine import resolve_device
from ..checkpoint import build_model_from_checkpoint, load_weights_file
from ..data import ShotSplit, build_dataset, canonical_dataset_name, create_eval_transform, create_loader
from ..data.splits import dataset_targets, eval_cap
from ..data.transforms import eval_input_size
from ..errors import UserInputError

__all__ = ["EvalSetup", "add_model_data_args", "dataset_from_record", "prepare_evaluation"]


def add_model_data_args(parser: argparse.ArgumentParser) -> None:
    """The model, data, shot-split and runtime flags (not the forward mode, not the outputs)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help="timm model name, e.g. ride_resnet32_3e (default: the checkpoint's)")
    group.add_argument("--pretrained", action="store_true", help="load the model's published pretrained weights")
    group.add_argument("--checkpoint", default=None,
                       help="a train.py checkpoint (.pth) or a .safetensors weight file for --model")
    group.add_argument("--num-classes", type=int, default=None, help="classes of a model built by name (default: the dataset's)")
    group.add_argument("--num-experts", type=int, default=None, help="experts of a model built by name")
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=None,
                       help="cifar10_lt, cifar100_lt, tiny_imagenet_lt, imagenet_lt, places_lt, inat2018, folder, demo "
                            "(default: the checkpoint's)")
    group.add_argument("--data-dir", default=None, help="dataset folder (image root for the split-list benchmarks)")
    group.add_argument("--split", default="test", help="split to evaluate")
    group.add_argument("--split-dir", default=None, help="folder of the split lists (ImageNet-LT, Places-LT, iNat)")
    group.add_argument("--imbalance-factor", type=float, default=None,
                       help="training imbalance factor, for the dataset's class counts (default: the dataset's)")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the CIFAR-LT construction (class counts) and of a model built without weights")
    group.add_argument("--img-size", type=int, default=None, help="input size (default: the model's pretrained cfg)")
    group.add_argument("--num-samples", type=int, default=None,
                       help="evaluate about this many images, the same share of every class (quick runs; the rows "
                            "train.py --max-eval-samples scores)")
    group = parser.add_argument_group("shot splits")
    group.add_argument("--shot-rule", default="standard", choices=("standard", "ncl"),
                       help="standard: many > 100, few < 20; ncl: many >= 100, few <= 20")
    group.add_argument("--many-threshold", type=int, default=None, help="override the many-shot threshold")
    group.add_argument("--few-threshold", type=int, default=None, help="override the few-shot threshold")
    group = parser.add_argument_group("runtime")
    group.add_argument("-b", "--batch-size", type=int, default=256)
    group.add_argument("-j", "--workers", type=int, default=2, help="data loading processes")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    group.add_argument("--channels-last", action="store_true")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass
class EvalSetup:
    """A model ready to evaluate (on its device, eval transform set) and the data to evaluate it on."""

    model: nn.Module
    checkpoint: Dict[str, Any]  # the train.py checkpoint it came from; {} when built by name
    dataset: Any  # the full split (its class names, targets, info)
    loader: Any  # over the evaluated rows (all, or --num-samples of them)
    class_counts: List[int]
    class_counts_source: str  # "checkpoint" or "dataset"
    shot_split: Any
    device: torch.device
    input_size: Tuple[int, int, int]
    context: Dict[str, Any]  # identifying keys for every result row

    @property
    def title(self) -> str:
        return f"{self.context['model']} on {self.context['dataset']} ({self.context['split']})"


def _create_model(args: argparse.Namespace, num_classes: Optional[int]):
    """Model and the checkpoint dict it came from (empty when built by name)."""
    checkpoint_path = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint_path is not None and checkpoint_path.suffix != ".safetensors":
        return build_model_from_checkpoint(checkpoint_path, model_name=args.model)
    if not args.model:
        raise UserInputError("pass --model (a timm model name), or --checkpoint with a train.py checkpoint")
    kwargs: Dict[str, Any] = {}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    elif num_classes is not None and not args.pretrained:
        kwargs["num_classes"] = num_classes
    if args.num_experts is not None:
        kwargs["num_experts"] = args.num_experts
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained, **kwargs)
    except UserInputError:
        raise
    except Exception as error:  # unknown name, bad kwargs, Hub download failure: all a user's to fix
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserInputError(f"cannot create model {args.model!r}: {reason}") from None
    checkpoint: Dict[str, Any] = {}
    if checkpoint_path is not None:
        checkpoint = load_weights_file(model, checkpoint_path)
    return model, checkpoint


def dataset_from_record(recorded: Any, name: Optional[str] = None, data_dir: Optional[str] = None,
                        imbalance_factor: Optional[float] = None) -> Tuple[str, Optional[str], Optional[float]]:
    """Dataset name, folder and imbalance factor: those given, else what a checkpoint or an exported
    config recorded (``recorded``: its ``dataset`` dict). The recorded folder and imbalance factor
    apply only to the recorded dataset; the demo set takes no imbalance factor."""
    recorded = recorded if isinstance(recorded, dict) else {}
    name = name or recorded.get("name")
    if not name:
        raise UserInputError("pass --dataset (the checkpoint does not record one)")
    same_dataset = name == recorded.get("name")
    data_dir = data_dir or (recorded.get("root") if same_dataset else None)
    if imbalance_factor is None and same_dataset and recorded.get("name") not in (None, "demo"):
        imbalance_factor = recorded.get("imbalance_factor")
    return name, data_dir, imbalance_factor


def _limit(dataset, num_samples: Optional[int]):
    """About ``num_samples`` rows, the same share of every class: the rows of train.py's
    ``--max-eval-samples`` (``eval_cap``), so a capped validate.py reproduces a run's final.json."""
    if num_samples is None or num_samples >= len(dataset):
        return dataset
    if num_samples < 1:
        raise UserInputError(f"--num-samples must be >= 1, got {num_samples}")
    return Subset(dataset, eval_cap(dataset_targets(dataset), num_samples).tolist())


def prepare_evaluation(args: argparse.Namespace) -> EvalSetup:
    """Model, dataset, loader, class counts and shot split from :func:`add_model_data_args`' flags."""

    if args.batch_size < 1 or args.workers < 0:
        raise UserInputError("--batch-size must be >= 1 and --workers >= 0")
    shot_split = ShotSplit.from_rule(args.shot_rule, args.many_threshold, args.few_threshold)
    device = resolve_device(args.device)

    # The dataset first when the model is built by name (its class count sizes the classifier).
    dataset = None
    checkpoint_is_pth = bool(args.checkpoint) and Path(args.checkpoint).suffix != ".safetensors"
    if args.dataset and not checkpoint_is_pth:
        dataset = build_dataset(args.dataset, args.data_dir, args.split, imbalance_factor=args.imbalance_factor,
                                seed=args.seed, split_dir=args.split_dir)
    torch.manual_seed(args.seed)  # a model evaluated without weights (smoke runs) gets the same init every time
    model, checkpoint = _create_model(args, dataset.num_classes if dataset is not None else None)
    if dataset is None:
        name, data_dir, imbalance = dataset_from_record(checkpoint.get("dataset"), args.dataset, args.data_dir,
                                                        args.imbalance_factor)
        dataset = build_dataset(name, data_dir, args.split, imbalance_factor=imbalance, seed=args.seed,
                                split_dir=args.split_dir)
    model_classes = int(getattr(model, "num_classes", 0))
    if model_classes != dataset.num_classes:
        raise UserInputError(
            f"the model predicts {model_classes} classes but {dataset.info.get('name')} has {dataset.num_classes}: "
            f"evaluate on the dataset it was trained for")
    dataset.transform = create_eval_transform(model, img_size=args.img_size)
    input_size = eval_input_size(model, args.img_size)

    if checkpoint.get("class_counts"):
        class_counts, source = [int(c) for c in checkpoint["class_counts"]], "checkpoint"
    else:
        class_counts, source = dataset.class_counts, "dataset"
    if len(class_counts) != dataset.num_classes:
        raise UserInputError(f"the {source} gives {len(class_counts)} class counts for {dataset.num_classes} classes")

    model_name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or args.model \
        or checkpoint.get("model_name")
    context = dict(model=checkpoint.get("model_name") or model_name, checkpoint=args.checkpoint,
                   pretrained=bool(args.pretrained), dataset=canonical_dataset_name(dataset.info.get("name", "")),
                   split=dataset.info.get("split", args.split), data_dir=dataset.info.get("root"),
                   imbalance_factor=dataset.info.get("imbalance_factor"))
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = create_loader(_limit(dataset, args.num_samples), batch_size=args.batch_size, shuffle=False,
                           num_workers=args.workers, pin_memory=device.type == "cuda")
    return EvalSetup(model=model, checkpoint=checkpoint, dataset=dataset, loader=loader,
                     class_counts=[int(c) for c in class_counts], class_counts_source=source, shot_split=shot_split,
                     device=device, input_size=tuple(input_size), context=context)

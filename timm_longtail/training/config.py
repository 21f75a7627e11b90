"""Command line and YAML recipe of ``train.py``.

As in timm's ``train.py``, ``--config recipe.yaml`` sets the parser defaults and any flag given on
the command line wins. The YAML keys are the argparse destinations (``batch_size``, ``lr``...);
a dash spelling (``batch-size``) is accepted too. An unknown key is a ``UserInputError`` naming
the nearest known key, raised before anything is built, so a typo never trains the wrong recipe;
so is a value of the wrong kind (``64.5`` for an integer, a string for a list): never truncated.

Every setting is either part of the *recipe* (what the run learns and reports) or *operational*
(where and how fast it runs): ``RECIPE_SETTINGS`` and ``OPERATIONAL_SETTINGS`` below, which a test
checks against the parser. A checkpoint records both; ``--resume <ckpt>`` alone continues with them
(:func:`continue_recipe`).
"""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..errors import ShortErrorParser, UserInputError
from ..losses.ride import DISTILL_TARGETS

__all__ = [
    "OPERATIONAL_SETTINGS", "PER_COMMAND_SETTINGS", "RECIPE_SETTINGS", "build_parser", "check_choices", "continue_recipe",
    "given_settings", "known_keys", "load_config", "load_recipe", "parse_args",
]

# What a run learns and what its figures mean: a resume keeps them unless --resume-changes-recipe says otherwise.
RECIPE_SETTINGS = (
    "dataset", "imbalance_factor", "train_split", "test_split", "val_split_fraction", "select_by", "train_transform",
    "img_size", "longtail_seed", "num_copies", "max_train_samples", "max_eval_samples",
    "model", "num_experts", "model_kwargs", "pretrained", "pretrained_backbone", "grad_checkpointing", "sync_bn",
    "model_ema", "model_ema_decay",
    "method", "stage", "drw_epoch", "loss_kwargs", "router_pos_weight", "distill_temperature", "distill_factor",
    "distill_on", "teacher_bn",
    "opt", "lr", "momentum", "weight_decay", "wd_skip_bias_bn", "clip_grad",
    "sched", "epochs", "decay_milestones", "decay_rate", "warmup_epochs", "warmup_lr", "min_lr", "sched_on_updates",
    "batch_size", "amp", "amp_dtype", "model_dtype", "seed", "max_steps_per_epoch",
)
# Where the inputs are (what they hold is recorded: the dataset's class counts, the lineage), how fast the
# same steps run (equal up to rounding; --device-augment draws the same augmentations on the device, from other
# random numbers), what is logged and evaluated at the end: may be given anew on resume.
OPERATIONAL_SETTINGS = (
    "config", "data_dir", "initial_checkpoint", "resume", "resume_changes_recipe", "teacher",
    "channels_last", "torchcompile", "torchcompile_mode", "opt_foreach", "opt_fused", "device_augment",
    "eval_batch_size", "workers", "pin_mem", "device", "output", "experiment", "log_interval", "eval_modes",
    "no_final_eval", "log_wandb", "wandb_project", "wandb_tags", "log_tensorboard",
)
# Operational settings of one command that a resume never takes from the checkpoint (the folder is the
# checkpoint's unless --experiment is given; the YAML's values are recorded one by one).
PER_COMMAND_SETTINGS = ("config", "resume", "resume_changes_recipe", "output", "experiment")


def _str2bool(value: str) -> bool:
    lowered = str(value).lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    """The full parser; ``known_keys()`` and the YAML check are derived from it."""
    parser = ShortErrorParser(
        description="Train RIDE / NCL++ / baseline long-tailed classifiers (timm_longtail).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-c", "--config", default="", metavar="YAML",
                        help="YAML recipe whose keys are the argument names below; flags override it")
    _add_dataset_args(parser)
    _add_model_args(parser)
    _add_method_args(parser)
    _add_optimizer_args(parser)
    _add_schedule_args(parser)
    _add_run_args(parser)
    return parser


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Dataset")
    group.add_argument("--dataset", default="demo",
                       help="dataset name understood by timm_longtail.data.build_dataset")
    group.add_argument("--data-dir", default=None, help="dataset root (not needed for 'demo')")
    group.add_argument("--imbalance-factor", type=float, default=None,
                       help="long-tail imbalance factor of the training set (dataset default if unset)")
    group.add_argument("--train-split", default="train")
    group.add_argument("--test-split", default="test",
                       help="split reported at the end; never used for model selection")
    group.add_argument("--val-split-fraction", type=float, default=0.0,
                       help="fraction of every training class held out (stratified, seeded) as a "
                            "validation split for model selection; 0 keeps all images for training")
    group.add_argument("--select-by", default="last", choices=["last", "val"],
                       help="checkpoint to report: the last epoch, or the best held-out validation "
                            "balanced top-1 (needs --val-split-fraction > 0)")
    group.add_argument("--train-transform", default=None,
                       help="augmentation recipe of timm_longtail.data.transforms (ride_cifar, "
                            "ldam_cifar, nclpp_cifar, imagenet, inat, nclpp_imagenet); default follows "
                            "method and dataset")
    group.add_argument("--img-size", type=int, default=None,
                       help="train/eval resolution (default: the images' own size for the CIFAR-style "
                            "recipes, 224 for the ImageNet-style ones)")
    group.add_argument("--longtail-seed", type=int, default=0,
                       help="seed of the long-tailed draw of the training set (cifar10_lt, cifar100_lt, folder), "
                            "apart from --seed; 0 is the standard set. Other values resample it (RIDE's "
                            "bias/variance study: analyze.py bias-variance)")
    group.add_argument("--device-augment", action="store_true", default=False,
                       help="small-image sets: hold the uint8 images on the training device and run the "
                            "augmentation there as batched tensor ops, without loader workers (ldam_cifar, "
                            "ride_cifar, nclpp_cifar with AutoAugment, Cutout and --num-copies)")
    group.add_argument("--num-copies", type=int, default=1,
                       help="NCL++: augmented copies T of every image per step")
    group.add_argument("--max-train-samples", type=int, default=None,
                       help="keep at most this many training images (class-stratified; for smoke runs)")
    group.add_argument("--max-eval-samples", type=int, default=None,
                       help="evaluate on about this many test images, the same share of every class (smoke runs "
                            "only; validate.py --num-samples takes the same rows)")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Model")
    group.add_argument("--model", default=None, help="timm model name, e.g. ride_resnet32_3e")
    group.add_argument("--num-experts", type=int, default=None,
                       help="experts of the model (default: the model name's)")
    group.add_argument("--model-kwargs", type=yaml.safe_load, default=None, metavar="YAML",
                       help="extra keyword arguments of timm.create_model, as a YAML mapping, e.g. "
                            "'{reduce_dimension: false}'")
    group.add_argument("--pretrained", action="store_true", default=False,
                       help="start from the model's published weights (timm pretrained_cfg)")
    group.add_argument("--pretrained-backbone", default=None, metavar="NAME|FILE",
                       help="seed the trunk and every expert from a plain ResNet: a timm model name "
                            "(e.g. resnet152.tv_in1k) or a local .safetensors/.pth state dict")
    group.add_argument("--initial-checkpoint", default=None,
                       help="timm_longtail checkpoint to start from (required by --stage router)")
    group.add_argument("--resume", default=None,
                       help="continue a run from its last.pth with the recipe it records (epoch, optimizer, "
                            "scheduler, scaler, every setting not given anew); recipe flags that differ from "
                            "the checkpoint's are refused")
    group.add_argument("--resume-changes-recipe", action="store_true", default=False,
                       help="with --resume: accept recipe flags that differ from the checkpoint's (the lineage "
                            "records the change)")
    group.add_argument("--teacher", default=None,
                       help="RIDE distillation: checkpoint of the teacher (e.g. a 6-expert model)")
    group.add_argument("--channels-last", action="store_true", default=False)
    group.add_argument("--torchcompile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                       help="torch.compile the training forward (default backend: inductor); the last, smaller "
                            "batch of an epoch compiles once more, after that both shapes are cached")
    group.add_argument("--torchcompile-mode", default=None,
                       help="torch.compile mode (default, reduce-overhead, max-autotune)")
    group.add_argument("--grad-checkpointing", action="store_true", default=False,
                       help="recompute the residual stages in the backward pass (less memory, more compute; "
                            "BatchNorm statistics see each batch twice)")
    group.add_argument("--sync-bn", action="store_true", default=False,
                       help="synchronised BatchNorm across processes (torchrun)")
    group.add_argument("--model-ema", action="store_true", default=False,
                       help="also keep an EMA of the weights (saved and evaluated beside the model)")
    group.add_argument("--model-ema-decay", type=float, default=0.9998)


def _add_method_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Method")
    group.add_argument("--method", default="ride", help="ce, bsce, ldam_drw, ride or nclpp")
    group.add_argument("--stage", default="experts", choices=["experts", "router"],
                       help="'experts': train the network; 'router': RIDE expert assignment "
                            "on a frozen --initial-checkpoint")
    group.add_argument("--drw-epoch", type=int, default=None,
                       help="ldam_drw / ride: epoch index from which DRW weights and RIDE "
                            "temperatures are on (default: 80%% of --epochs, as the references)")
    group.add_argument("--loss-kwargs", type=yaml.safe_load, default=None, metavar="YAML",
                       help="extra keyword options of timm_longtail.losses.build_loss, as a YAML "
                            "mapping, e.g. '{diversity_factor: -0.45, reweight_factor: 0.05}'")
    group.add_argument("--router-pos-weight", type=float, default=100.0,
                       help="router stage: BCE weight of 'call the next expert' targets")
    group.add_argument("--distill-temperature", type=float, default=1.5)
    group.add_argument("--distill-factor", type=float, default=1.0)
    group.add_argument("--distill-on", default="experts", choices=DISTILL_TARGETS,
                       help="'experts': RIDE loss + one KL per student expert (the paper); 'mean': "
                            "RIDE loss + one KL on the experts' mean logits; 'reference': the RIDE "
                            "code's objective, E x (RIDE loss + KL on the mean logits)")
    group.add_argument("--teacher-bn", default="eval", choices=["eval", "train"],
                       help="RIDE distillation: the frozen teacher's BatchNorm. 'eval': its running "
                            "statistics; 'train': each batch's, as the RIDE code leaves its teacher")


def _add_optimizer_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Optimizer")
    group.add_argument("--opt", default="sgd", help="timm optimizer name ('sgd' is Nesterov)")
    group.add_argument("--lr", type=float, default=0.1)
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight-decay", type=float, default=5e-4)
    group.add_argument("--wd-skip-bias-bn", type=_str2bool, default=False, metavar="BOOL",
                       help="exempt biases and norm weights from weight decay (timm's default); "
                            "the reference recipes decay every parameter")
    group.add_argument("--clip-grad", type=float, default=None)
    group.add_argument("--opt-foreach", type=_str2bool, default=None, metavar="BOOL",
                       help="multi-tensor optimizer step (default: torch's choice, on for CUDA tensors)")
    group.add_argument("--opt-fused", action="store_true", default=False,
                       help="torch's fused optimizer kernel (SGD: CUDA and CPU); not with --opt-foreach true")


def _add_schedule_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Schedule")
    group.add_argument("--sched", default="multistep", help="timm scheduler name")
    group.add_argument("--epochs", type=int, default=200)
    group.add_argument("--decay-milestones", type=int, nargs="+", default=[161, 181],
                       help="multistep: timm convention, the decayed lr applies from epoch index "
                            "m-1 (161 = from the 161st epoch, as the references' 160)")
    group.add_argument("--decay-rate", type=float, default=0.1)
    group.add_argument("--warmup-epochs", type=int, default=5)
    group.add_argument("--warmup-lr", type=float, default=0.02)
    group.add_argument("--min-lr", type=float, default=0.0)
    group.add_argument("--sched-on-updates", action="store_true", default=False,
                       help="step the schedule every optimizer update instead of every epoch")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Run")
    group.add_argument("--batch-size", type=int, default=128,
                       help="images per step and process (NCL++: before the T copies)")
    group.add_argument("--eval-batch-size", type=int, default=256)
    group.add_argument("--workers", type=int, default=4, help="data loader processes per rank")
    group.add_argument("--pin-mem", type=_str2bool, default=True, metavar="BOOL")
    group.add_argument("--device", default=None,
                       help="cuda, cuda:1, cpu... (default: cuda when available)")
    group.add_argument("--amp", action="store_true", default=False,
                       help="mixed precision (float16 + grad scaling on CUDA, bfloat16 on CPU)")
    group.add_argument("--amp-dtype", default=None, choices=["float16", "bfloat16"])
    group.add_argument("--model-dtype", default=None, choices=["float32", "float64", "bfloat16"],
                       help="dtype of the weights and inputs, without autocast (timm's --model-dtype; default "
                            "float32). float64 makes a few steps' numerics the same on any CPU (the golden tests)")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--output", default="runs", help="parent folder of the run folders")
    group.add_argument("--experiment", default=None,
                       help="run folder name (default: method-model-dataset-time; a --resume "
                            "run continues in its checkpoint's folder)")
    group.add_argument("--log-interval", type=int, default=50, help="steps between log lines")
    group.add_argument("--log-wandb", action="store_true", default=False,
                       help="log the recipe, every epoch's summary.csv row and the final test figures to Weights & "
                            "Biases (pip install 'timm-longtail[wandb]'); WANDB_MODE=offline keeps the run in "
                            "<run folder>/wandb for `wandb sync`")
    group.add_argument("--wandb-project", default=None, help="W&B project of the run (default: W&B's)")
    group.add_argument("--wandb-tags", nargs="+", default=None, metavar="TAG", help="W&B tags of the run")
    group.add_argument("--log-tensorboard", default=None, metavar="DIR",
                       help="also write the same figures as TensorBoard event files to DIR/<run name> (pip install "
                            "'timm-longtail[tensorboard]'; view with tensorboard --logdir DIR)")
    group.add_argument("--max-steps-per-epoch", type=int, default=None,
                       help="cut every epoch after this many steps (smoke runs)")
    group.add_argument("--eval-modes", nargs="+", default=None,
                       help="forward modes reported at the end (default: all of the model's)")
    group.add_argument("--no-final-eval", action="store_true", default=False,
                       help="skip the test-set evaluation at the end")


def known_keys(parser: argparse.ArgumentParser | None = None) -> set[str]:
    """Argument destinations a YAML recipe may set."""
    parser = parser or build_parser()
    return {action.dest for action in parser._actions if action.dest not in {"help", "config"}}


def load_config(path: str | Path, parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """Read a YAML recipe and check that every key is an argument of ``train.py``."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"config file not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserInputError(f"config {path} is not valid YAML: {exc}") from None
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise UserInputError(f"config {path} must be a mapping of argument names to values")
    parser = parser or build_parser()
    actions = {action.dest: action for action in parser._actions if action.dest in known_keys(parser)}
    normalised: dict[str, Any] = {}
    for key, value in recipe.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            close = difflib.get_close_matches(dest, sorted(actions), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserInputError(f"config {path}: unknown key '{key}'{hint}")
        normalised[dest] = _coerce(actions[dest], value, f"config {path}: key '{key}'")
    return normalised


load_recipe = load_config  # its earlier name (a YAML config was called a recipe), kept for callers


def _coerce(action: argparse.Action, value: Any, where: str) -> Any:
    """Give a YAML value the type its flag would have (PyYAML reads ``5e-4`` as a string); a value of
    another kind is an error, never converted with a loss (``64.5`` for an integer, text for a list)."""
    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UserInputError(f"{where} must be true or false, got {value!r}")
        return value
    if action.nargs in ("+", "*"):
        if isinstance(value, str):
            raise UserInputError(f"{where} must be a YAML list such as [a, b], got the text {value!r}")
        items = value if isinstance(value, (list, tuple)) else [value]  # one number: a one-item list, as the flag
        return [_convert_one(action, item, where) for item in items]
    return _convert_one(action, value, where)


def _convert_one(action: argparse.Action, value: Any, where: str) -> Any:
    convert = action.type
    try:
        if convert is _str2bool:
            value = value if isinstance(value, bool) else _str2bool(str(value))
        elif convert is yaml.safe_load:  # already read from the YAML (check_args wants a mapping)
            pass
        elif convert is int:
            if isinstance(value, (bool, float)):  # int(64.5) would train with 64
                raise ValueError(f"expected an integer, got {value!r}")
            value = int(value)
        elif convert is float:
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            value = float(value)
        elif convert is None and not isinstance(value, str):
            raise ValueError(f"expected text, got {value!r} (quote it)")
        elif convert is not None:
            value = convert(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise UserInputError(f"{where}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise UserInputError(f"{where} must be one of {sorted(action.choices)}, got {value!r}")
    return value


def check_choices(args: argparse.Namespace) -> None:
    """Every setting with a fixed set of values holds one of them, whatever set it (argparse checks only the
    command line; a YAML value is checked as it is read, a Namespace built in code or read back is not)."""
    for action in build_parser()._actions:
        value = getattr(args, action.dest, None)
        if action.choices is None or value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item not in action.choices:
                raise UserInputError(f"{action.option_strings[-1]} must be one of {', '.join(map(str, action.choices))}")


def _split_config(argv: Sequence[str] | None) -> tuple[str, list[str]]:
    """(the ``--config`` YAML, the other arguments)."""
    config_parser = ShortErrorParser(add_help=False, prog="train.py")
    config_parser.add_argument("-c", "--config", default="")
    known, remaining = config_parser.parse_known_args(argv)
    return known.config, remaining


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``: YAML recipe first, command-line flags on top."""
    parser = build_parser()
    config, remaining = _split_config(argv)
    if config:
        parser.set_defaults(**load_config(config, parser))
    args = parser.parse_args(remaining)
    args.config = config
    return args


def given_settings(argv: Sequence[str] | None = None) -> frozenset[str]:
    """The settings ``argv`` sets, on the command line or in its ``--config`` YAML (the others keep their
    defaults, or on ``--resume`` the checkpoint's values). Call after :func:`parse_args` has checked ``argv``."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    config, remaining = _split_config(argv)
    given = set(vars(parser.parse_args(remaining)))
    if config:
        given |= {"config", *load_config(config, parser)}
    return frozenset(given)


def _same_setting(recorded: Any, value: Any) -> bool:
    """Equal settings, a tuple equal to its list (YAML and the parser give lists)."""
    def plain(item: Any) -> Any:
        return list(item) if isinstance(item, tuple) else item

    return plain(recorded) == plain(value)


def continue_recipe(args: argparse.Namespace, given: frozenset[str] | set[str],
                    recorded: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Resume ``args`` from a checkpoint's ``recorded`` recipe: every setting not ``given`` anew (but those of
    ``PER_COMMAND_SETTINGS``) takes its recorded value, so ``--resume <ckpt>`` alone continues the run as it
    was. Returns the recipe settings given with another value than recorded, ``{name: (recorded, given)}``;
    the caller refuses them unless ``--resume-changes-recipe``. A setting the checkpoint does not record
    (a flag newer than it) keeps its value."""
    changed: dict[str, tuple[Any, Any]] = {}
    for name in (*RECIPE_SETTINGS, *OPERATIONAL_SETTINGS):
        if name in PER_COMMAND_SETTINGS or name not in recorded:
            continue
        if name not in given:
            setattr(args, name, recorded[name])
        elif name in RECIPE_SETTINGS and not _same_setting(recorded[name], getattr(args, name)):
            changed[name] = (recorded[name], getattr(args, name))
    return changed

"""The YAML recipes: every shipped config parses, uses only train.py's arguments, fits its method."""
import re
from pathlib import Path

import pytest
import timm

import timm_longtail  # noqa: F401  (registers the models)
from timm_longtail.errors import UserInputError
from timm_longtail.losses import LOSS_OPTIONS
from timm_longtail.losses.ride import DISTILL_TARGETS
from timm_longtail.training import METHODS, build_parser, given_settings, known_keys, load_config, parse_args
from timm_longtail.training.config import (
    OPERATIONAL_SETTINGS, PER_COMMAND_SETTINGS, RECIPE_SETTINGS, check_choices, continue_recipe,
)
from timm_longtail.training.methods import check_args
from conftest import CONFIG_DIR

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_configs_exist_for_every_method():
    methods = {load_config(path)["method"] for path in CONFIGS}
    assert methods == set(METHODS)
    names = {path.stem for path in CONFIGS}
    for needed in ("ride_r32_3e_cifar100lt", "ride_r32_3e_cifar100lt_router", "ride_r32_6e_cifar100lt_teacher",
                   "ride_r32_3e_cifar100lt_distill", "ride_r32_3e_cifar10lt", "ride_r50_3e_imagenetlt",
                   "ride_x50_3e_imagenetlt", "ride_r50_3e_inat", "nclpp_r32_cifar100lt", "nclpp_r32_cifar10lt",
                   "nclpp_r50_imagenetlt", "nclpp_x50_imagenetlt", "nclpp_r50_inat", "nclpp_r152_placeslt",
                   "ce_r32_cifar10lt", "bsce_r32_cifar10lt", "ldam_drw_r32_cifar10lt",
                   "ride_r32_3e_tinyimagenetlt", "nclpp_r32_tinyimagenetlt", "demo_ride", "demo_nclpp"):
        assert needed in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_fits_its_method(path):
    recipe = load_config(path)
    assert set(recipe) <= known_keys()
    argv = ["--config", str(path)]
    if recipe.get("stage") == "router":
        argv += ["--initial-checkpoint", "stage1.pth"]  # given on the command line by design
    args = parse_args(argv)
    spec = check_args(args)
    if args.model is not None:
        assert timm.is_model(args.model), args.model
    assert set(args.loss_kwargs or {}) <= set(LOSS_OPTIONS[spec.name])
    assert isinstance(args.lr, float) and isinstance(args.weight_decay, float)
    if recipe.get("sched") == "multistep":
        assert all(0 < m <= args.epochs for m in args.decay_milestones)
    if spec.reweights and args.stage == "experts":
        assert args.drw_epoch is not None and args.drw_epoch < args.epochs


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: ride_resnet32_3e\nbatch_sise: 64\n")
    with pytest.raises(UserInputError, match=r"unknown key 'batch_sise'.*batch_size"):
        load_config(path)


def test_yaml_values_get_the_flag_types_and_flags_win(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("weight-decay: 5e-4\nepochs: '12'\ndecay_milestones: 7\nchannels_last: true\n")
    args = parse_args(["--config", str(path), "--epochs", "3"])
    assert args.weight_decay == pytest.approx(5e-4)  # PyYAML alone reads 5e-4 as a string
    assert args.epochs == 3 and args.decay_milestones == [7] and args.channels_last is True


@pytest.mark.parametrize("text, message", [
    ("stage: sideways\n", "stage"),
    ("amp: maybe\n", "true or false"),
    ("lr: fast\n", "lr"),
    ("- a list\n", "mapping"),
    ("batch_size: 64.5\n", "key 'batch_size': expected an integer, got 64.5"),  # never trained with 64
    ("epochs: 200.0\n", "key 'epochs': expected an integer, got 200.0"),
    ("epochs: true\n", "key 'epochs': expected an integer, got True"),
    ("lr: true\n", "key 'lr': expected a number, got True"),
    ("decay_milestones: '160 180'\n", "key 'decay_milestones' must be a YAML list such as [a, b]"),
    ("eval_modes: ensemble routed\n", "key 'eval_modes' must be a YAML list"),
    ("decay_milestones: [160, 180.5]\n", "expected an integer, got 180.5"),
    ("model: 32\n", "key 'model': expected text, got 32"),
])
def test_bad_yaml_values_are_user_errors(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError, match=re.escape(message)):
        load_config(path)


def test_every_setting_is_recipe_or_operational_once():
    """The list beside the parser that a resume follows: each argument in exactly one group."""
    dests = [action.dest for action in build_parser()._actions if action.dest != "help"]
    assert len(RECIPE_SETTINGS) == len(set(RECIPE_SETTINGS))
    assert len(OPERATIONAL_SETTINGS) == len(set(OPERATIONAL_SETTINGS))
    assert sorted(RECIPE_SETTINGS + OPERATIONAL_SETTINGS) == sorted(dests)
    assert set(PER_COMMAND_SETTINGS) <= set(OPERATIONAL_SETTINGS)


def test_given_settings_are_the_flags_and_the_yaml_keys(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("lr: 0.2\nworkers: 1\n")
    assert given_settings(["--resume", "x.pth"]) == {"resume"}
    assert given_settings(["-c", str(path), "--seed", "3", "--amp", "--torchcompile"]) == {
        "config", "lr", "workers", "seed", "amp", "torchcompile"}


def test_a_resume_takes_what_is_not_given_and_reports_recipe_changes():
    recorded = vars(parse_args(["--model", "ride_resnet32_2e", "--batch-size", "32", "--seed", "0", "--workers", "2",
                                "--decay-milestones", "13", "--loss-kwargs", "{reweight_factor: 0.05}",
                                "--output", "elsewhere", "--experiment", "old"]))
    argv = ["--resume", "old/last.pth", "--workers", "0", "--seed", "0", "--lr", "0.01"]
    args = parse_args(argv)
    changed = continue_recipe(args, given_settings(argv), recorded)
    assert changed == {"lr": (0.1, 0.01)}  # the seed given equals the recorded one; workers are operational
    assert (args.batch_size, args.decay_milestones, args.loss_kwargs) == (32, [13], {"reweight_factor": 0.05})
    assert (args.model, args.workers, args.lr) == ("ride_resnet32_2e", 0, 0.01)
    assert (args.output, args.experiment, args.resume) == ("runs", None, "old/last.pth")  # this command's own
    older = {k: v for k, v in recorded.items() if k != "model_dtype"}  # a checkpoint from before a flag existed
    args = parse_args(["--resume", "x.pth"])
    assert continue_recipe(args, {"resume"}, older) == {} and args.model_dtype is None


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return " ".join(line for line in lines if line.startswith("#"))


HEAD_SCALE_CONFIGS = [p for p in CONFIGS if re.search(r"cosine head scale \d+", _header(p))]


@pytest.mark.parametrize("path", HEAD_SCALE_CONFIGS, ids=[p.stem for p in HEAD_SCALE_CONFIGS])
def test_config_builds_the_head_scale_its_header_states(path):
    """Built as train.py builds it (``assembly.create_model`` with the recipe's model_kwargs)."""
    from timm_longtail.models._experts import CosineLinear
    from timm_longtail.training.assembly import Checkpoints, create_model, resolve_model_name

    stated = float(re.search(r"cosine head scale (\d+)", _header(path)).group(1))
    args = parse_args(["--config", str(path)])
    check_args(args)
    found = Checkpoints()
    model, kwargs = create_model(args, resolve_model_name(args, found), found, num_classes=10)
    scales = {m.scale for m in model.modules() if isinstance(m, CosineLinear)}
    assert scales == {stated}, f"{path.name}: header says {stated}, built {scales}"
    assert kwargs.get("head_scale", stated) == stated  # recorded in the checkpoint's model_kwargs


def test_nclpp_inat_uses_the_reference_head_scale_32():
    assert any(p.stem == "nclpp_r50_inat" for p in HEAD_SCALE_CONFIGS)


# ---- CIFAR baselines: the LDAM-DRW code's recipe (Cao et al. 2019, kaidic/LDAM-DRW) ---------------

LDAM_DRW_CODE_BASELINES = ["ce_r32_cifar10lt", "bsce_r32_cifar10lt", "ldam_drw_r32_cifar10lt"]


def _ldam_drw_code_lr(epoch: int, base: float = 0.1) -> float:
    """``adjust_learning_rate`` of the LDAM-DRW code's cifar_train.py (epoch counted from 0)."""
    epoch = epoch + 1
    if epoch <= 5:
        return base * epoch / 5
    if epoch > 180:
        return base * 0.0001
    if epoch > 160:
        return base * 0.01
    return base


def _set_up_run(name: str, *extra: str):
    """train.py's set-up of a config (optimizer, scheduler, loss, model), on the embedded demo set."""
    import torch

    from timm_longtail.training.distributed import DistContext
    from timm_longtail.training.runner import _Run

    args = parse_args(["--config", str(CONFIG_DIR / f"{name}.yaml"), "--dataset", "demo", "--device", "cpu",
                       "--workers", "0", *extra])
    args.imbalance_factor = None  # the demo set's long tail is fixed
    run = _Run(args, check_args(args), DistContext(device=torch.device("cpu")), "test")
    run.setup()
    return run


@pytest.mark.parametrize("name", LDAM_DRW_CODE_BASELINES)
def test_cifar_baselines_follow_the_ldam_drw_code(name):
    import torch

    recipe = load_config(CONFIG_DIR / f"{name}.yaml")
    assert recipe["train_transform"] == "ldam_cifar"  # crop + flip, no RandomRotation
    assert recipe["batch_size"] == 128 and recipe["epochs"] == 200 and not recipe.get("amp", False)
    assert recipe["channels_last"] is True and recipe["workers"] == 2
    run = _set_up_run(name)
    optimizer = run.optimizer
    assert type(optimizer) is torch.optim.SGD
    for group in optimizer.param_groups:  # plain momentum, weight decay on every parameter
        assert group["momentum"] == 0.9 and group["nesterov"] is False and group["weight_decay"] == 2e-4
    # the lr of every epoch, stepped as the runner steps it (scheduler.step(epoch + 1) after each epoch)
    for epoch in range(200):
        if epoch > 0:
            run.scheduler.step(epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(_ldam_drw_code_lr(epoch), rel=1e-9), epoch
    if name.startswith("ldam_drw"):
        assert run.drw_epoch == 160  # the code: betas[epoch // 160], beta 0.9999 from epoch 160
        assert run.criterion.ldam.margins.max().item() == pytest.approx(0.5)
        heads = [m for m in run.model.modules() if type(m).__name__ == "CosineLinear"]
        assert len(heads) == 1 and heads[0].scale == 30.0 and heads[0].bias is None
        assert heads[0].in_features == 64  # 16/32/64, no RIDE channel reduction
    else:
        assert run.drw_epoch is None
        heads = [m for m in run.model.modules() if isinstance(m, torch.nn.Linear)]
        assert len(heads) == 1 and heads[0].in_features == 64 and heads[0].bias is not None


# ---- RIDE and NCL++ CIFAR recipes: the lr of every epoch as each reference code computes it -------

def _ride_code_lr(epoch: int, warmup: int, base: float = 0.1) -> float:
    """The RIDE code's ``CustomLR`` (train.py: a LambdaLR stepped after each epoch, epoch from 0):
    x0.01 from 160, x0.0001 from 180, warm-up lr * (1 + epoch) / warmup_epoch."""
    factor = 0.0001 if epoch >= 180 else 0.01 if epoch >= 160 else 1.0
    return base * factor * ((1 + epoch) / warmup if epoch < warmup else 1.0)


def _ncl_code_lr(epoch: int, base: float = 0.1, milestones=(320, 360), warmup: int = 5) -> float:
    """The NCL code's ``WarmupMultiStepLR`` (warm-up factor 1/3, linear), stepped at the START of each
    1-indexed epoch: training epoch ``epoch`` (from 0) runs at last_epoch = epoch + 1."""
    last = epoch + 1
    alpha = last / warmup
    factor = (1 / 3) * (1 - alpha) + alpha if last < warmup else 1.0
    return base * factor * 0.1 ** sum(last >= m for m in milestones)


# config -> (the reference code's lr of epoch e, epochs): RIDE's configs config_imbalance_cifar100_ride.json,
# _ride_teacher.json (warm-up 5), _distill_ride.json (warm-up 20); NCL's cifar100_im100_NCL++.yaml
REFERENCE_SCHEDULES = {
    "ride_r32_3e_cifar10lt": (lambda e: _ride_code_lr(e, 5), 200),
    "ride_r32_3e_cifar100lt": (lambda e: _ride_code_lr(e, 5), 200),
    "ride_r32_6e_cifar100lt_teacher": (lambda e: _ride_code_lr(e, 5), 200),
    "ride_r32_3e_cifar100lt_distill": (lambda e: _ride_code_lr(e, 20), 200),
    "ride_r32_cifar10lt_distill": (lambda e: _ride_code_lr(e, 20), 200),
    "nclpp_r32_cifar10lt": (_ncl_code_lr, 400),
    "nclpp_r32_cifar100lt": (_ncl_code_lr, 400),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_SCHEDULES))
def test_ride_and_nclpp_cifar_recipes_follow_their_code_epoch_by_epoch(name):
    import torch

    reference, epochs = REFERENCE_SCHEDULES[name]
    run = _set_up_run(name)
    optimizer = run.optimizer
    assert type(optimizer) is torch.optim.SGD and run.args.epochs == epochs
    for group in optimizer.param_groups:  # both codes: SGD, momentum 0.9, Nesterov
        assert group["momentum"] == 0.9 and group["nesterov"] is True
    for epoch in range(epochs):
        if epoch > 0:
            run.scheduler.step(epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(reference(epoch), rel=1e-9), epoch


def _cpu_nclpp_entry_args() -> list:
    """The train.py arguments the zoo manifest adds to the NCL++ config for the e200c2 entry."""
    import yaml

    manifest = yaml.safe_load((CONFIG_DIR / "zoo" / "manifest.yaml").read_text())
    (entry,) = [e for e in manifest["entries"] if e["name"] == "nclpp_resnet32.e200c2_cifar10_lt_if100"]
    return entry["stages"][0]["args"]


def test_the_cpu_nclpp_recipe_scales_the_reference_milestones():
    """The zoo's e200c2 NCL++ entry: 200 epochs, the reference's decays (1-indexed 320, 360 of 400) halved."""
    args = _cpu_nclpp_entry_args()
    milestones = [int(v) for v in args[args.index("--decay-milestones") + 1:][:2]]
    run = _set_up_run("nclpp_r32_cifar10lt", *args)
    for epoch in range(200):
        if epoch > 0:
            run.scheduler.step(epoch)
        assert run.optimizer.param_groups[0]["lr"] == pytest.approx(
            _ncl_code_lr(epoch, milestones=(160, 180)), rel=1e-9), (epoch, milestones)


def _card_differences(recipe: dict) -> list:
    """The recipe lines a card's "How this differs from the paper" shows for an experts stage ``recipe``."""
    from timm_longtail.hub.card import _differences, load_reference

    reference = load_reference()
    lines = _differences(reference, recipe["method"], "cifar", recipe, {}, True, "CIFAR-10-LT", compared=recipe)
    return [line for line in lines if line not in reference["method_notes"][recipe["method"]]]


@pytest.mark.parametrize("name", sorted(REFERENCE_SCHEDULES))
def test_cards_see_no_difference_in_the_shipped_cifar_recipes(name):
    """hub_cards/reference.yaml's paper recipe agrees with the code's schedule checked above: warm-up,
    lr steps, epochs, batch, weight decay, copies and augmentation (a distilled student: its own recipe)."""
    from timm_longtail.hub.card import _warmup_difference, load_reference

    recipe = load_config(CONFIG_DIR / f"{name}.yaml")
    method = recipe["method"]
    family = "cifar_distill" if "distill" in name else "cifar"
    paper = load_reference()["paper_recipes"][method][family]
    assert _warmup_difference(recipe, paper["warmup_epochs"], paper["lr"], paper.get("warmup_start_factor", 0)) == ""
    assert {"decay_milestones", "decay_rate"} <= set(paper)
    if "distill" in name:
        recipe = dict(recipe, teacher="teacher.pth")  # a distilled student's card compares the distillation recipe
    assert _card_differences(recipe) == []


def test_the_cpu_nclpp_card_lists_each_shortened_setting():
    """The e200c2 entry's card names what it shortened: epochs, copies and the lr steps that follow them."""
    args = parse_args(["--config", str(CONFIG_DIR / "nclpp_r32_cifar10lt.yaml"), *_cpu_nclpp_entry_args()])
    lines = _card_differences(vars(args))
    assert lines == ["`epochs`: ours 200, the NCL++ paper's recipe 400.",
                     "`decay_milestones`: ours [160, 180], the NCL++ paper's recipe [320, 360].",
                     "`num_copies`: ours 2, the NCL++ paper's recipe 4."]


@pytest.mark.parametrize("name, value, flag", [("distill_on", "logits", "--distill-on"), ("stage", "teacher", "--stage"),
                                               ("select_by", "best", "--select-by"),
                                               ("amp_dtype", "float8", "--amp-dtype")])
def test_a_setting_outside_its_choices_is_refused_whoever_set_it(name, value, flag):
    """The parser's choices are the one list: a Namespace built in code (or read back) is held to them."""
    args = parse_args(["--model", "ride_resnet32_3e", "--method", "ride"])
    check_choices(args)
    setattr(args, name, value)
    with pytest.raises(UserInputError, match=f"^{flag} must be one of"):
        check_choices(args)


def test_distillation_targets_have_one_home():
    action = next(a for a in build_parser()._actions if a.dest == "distill_on")
    assert tuple(action.choices) == DISTILL_TARGETS

"""Flag combinations rejected before anything is built."""
import pytest

from timm_longtail.errors import UserInputError
from timm_longtail.training import parse_args
from timm_longtail.training.methods import check_args, freeze_for_stage, resolve_drw_epoch


@pytest.mark.parametrize("argv, message", [
    (["--method", "focal", "--model", "ride_resnet32_3e"], "unknown --method 'focal'"),
    (["--method", "ride", "--model", "nclpp_resnet32"], "does not fit --method ride"),
    (["--method", "nclpp", "--model", "ride_resnet32_3e"], "does not fit --method nclpp"),
    (["--method", "nclpp", "--stage", "router", "--initial-checkpoint", "x.pth"], "only for --method ride"),
    (["--method", "ride", "--stage", "router"], "needs --initial-checkpoint"),
    (["--method", "ride", "--model", "ride_resnet32_3e", "--num-copies", "2"], "needs --method nclpp"),
    (["--method", "ce", "--model", "nclpp_resnet32", "--teacher", "t.pth"], "part of --method ride"),
    (["--method", "ride", "--model", "ride_resnet32_3e", "--select-by", "val"], "--val-split-fraction"),
    (["--method", "bsce", "--model", "nclpp_resnet32", "--drw-epoch", "3"], "no effect"),
    (["--method", "ride"], "--model is required"),
    (["--method", "ride", "--model", "ride_resnet32_3e", "--loss-kwargs", "[1, 2]"], "mapping"),
])
def test_inconsistent_flags(argv, message):
    with pytest.raises(UserInputError, match=message):
        check_args(parse_args(argv))


def test_drw_epoch_defaults_to_80_percent():
    args = parse_args(["--method", "ride", "--model", "ride_resnet32_3e", "--epochs", "200"])
    assert resolve_drw_epoch(args, check_args(args)) == 160
    args = parse_args(["--method", "ce", "--model", "nclpp_resnet32"])
    assert resolve_drw_epoch(args, check_args(args)) is None


def test_freeze_for_stage_trains_experts_or_router_only():
    import timm

    import timm_longtail  # noqa: F401

    model = timm.create_model("ride_resnet32_2e", num_classes=10)
    freeze_for_stage(model, "router")
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"router"}
    freeze_for_stage(model, "experts")
    frozen = {name.split(".")[0] for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"router"}


@pytest.mark.parametrize("mode", ["experts", "mean", "reference"])
def test_distill_modes_are_accepted(mode):
    args = parse_args(["--method", "ride", "--model", "ride_resnet32_3e", "--teacher", "t.pth", "--distill-on", mode])
    check_args(args)
    assert args.distill_on == mode
    assert parse_args(["--method", "ride"]).distill_on == "experts"  # the paper's form stays the default
    assert parse_args(["--method", "ride"]).teacher_bn == "eval"  # the reference's train-mode teacher: opt-in

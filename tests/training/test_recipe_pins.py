"""Every shipped config's numbers pinned to its reference recipe, from one table (that DRW reaches
the loss in a real run is tests/test_train.py's test_the_loss_receives_drw_weights_from_the_drw_epoch_on).

The table's values are the reference codes' (shared/spec/code-facts.md: RIDE's and NCL's configs,
LDAM-DRW's cifar_train.py), written in timm's conventions: a multistep milestone ``m`` decays from
epoch index ``m - 1`` (the references' epoch 160 is ``161``), and ``opt`` ``sgd`` is Nesterov,
``momentum`` plain momentum. The lr of every epoch is checked in test_config.py.
"""
import pytest

import timm_longtail  # noqa: F401  (registers the models)
from timm_longtail.training import parse_args
from conftest import CONFIG_DIR


_RIDE_LOSS_CIFAR = dict(base_loss="ldam", diversity_factor=-0.45, reweight_factor=0.05, max_margin=0.5, scale=30.0)
_RIDE_CIFAR = dict(epochs=200, batch_size=128, opt="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, sched="multistep",
                   decay_milestones=[161, 181], decay_rate=0.01, drw_epoch=160, train_transform="ride_cifar",
                   num_copies=1, loss_kwargs=_RIDE_LOSS_CIFAR)
_RIDE_DISTILL = dict(_RIDE_CIFAR, distill_temperature=1.5, distill_factor=1.0)
_RIDE_IMAGENET = dict(epochs=100, batch_size=256, opt="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4,
                      sched="multistep", decay_milestones=[61, 81], decay_rate=0.1, drw_epoch=80,
                      train_transform="imagenet",
                      loss_kwargs=dict(base_loss="ldam", diversity_factor=-0.2, reweight_factor=0.02))
_RIDE_INAT = dict(_RIDE_IMAGENET, batch_size=512, lr=0.2, train_transform="inat",
                  loss_kwargs=dict(base_loss="ldam", diversity_factor=-0.2, reweight_factor=0.015))
_ROUTER = dict(stage="router", epochs=5, batch_size=512, opt="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
               sched="cosine", warmup_epochs=0, router_pos_weight=100.0)
_NCLPP_LOSS = dict(inter_weight=0.6, intra_weight=0.6)
_NCLPP_CIFAR = dict(epochs=400, batch_size=64, opt="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4,
                    sched="multistep", decay_milestones=[320, 360], decay_rate=0.1, num_copies=4,
                    train_transform="nclpp_cifar", seed=42, loss_kwargs=dict(_NCLPP_LOSS, hard_ratio=0.3))
_NCLPP_IMAGENET = dict(epochs=200, batch_size=256, opt="sgd", lr=0.2, momentum=0.9, weight_decay=2e-4,
                       sched="cosine", min_lr=1e-4, train_transform="nclpp_imagenet", seed=42,
                       loss_kwargs=dict(_NCLPP_LOSS, num_hard=300))
_LDAM_CODE = dict(epochs=200, batch_size=128, opt="momentum", lr=0.1, momentum=0.9, weight_decay=2e-4,
                  sched="multistep", decay_milestones=[161, 181], decay_rate=0.01, train_transform="ldam_cifar")

RECIPES = {
    "ride_r32_3e_cifar10lt": _RIDE_CIFAR,
    "ride_r32_3e_cifar100lt": _RIDE_CIFAR,
    "ride_r32_3e_tinyimagenetlt": _RIDE_CIFAR,
    "ride_r32_6e_cifar100lt_teacher": _RIDE_CIFAR,
    "ride_r32_3e_cifar100lt_distill": dict(_RIDE_DISTILL, distill_on="experts", teacher_bn="eval"),
    "ride_r32_cifar10lt_distill": dict(_RIDE_DISTILL, distill_on="reference", teacher_bn="train"),
    "ride_r50_3e_imagenetlt": _RIDE_IMAGENET,
    "ride_x50_3e_imagenetlt": _RIDE_IMAGENET,
    "ride_r50_3e_inat": _RIDE_INAT,
    "ride_r32_3e_cifar10lt_router": dict(_ROUTER, train_transform="ride_cifar"),
    "ride_r32_3e_cifar100lt_router": dict(_ROUTER, train_transform="ride_cifar"),
    "ride_r32_3e_tinyimagenetlt_router": dict(_ROUTER, train_transform="ride_cifar"),
    "ride_imagenetlt_router": dict(_ROUTER, train_transform="imagenet"),
    "ride_inat_router": dict(_ROUTER, train_transform="inat"),
    "nclpp_r32_cifar10lt": _NCLPP_CIFAR,
    "nclpp_r32_cifar100lt": _NCLPP_CIFAR,
    "nclpp_r32_tinyimagenetlt": _NCLPP_CIFAR,
    "nclpp_r50_imagenetlt": _NCLPP_IMAGENET,
    "nclpp_x50_imagenetlt": _NCLPP_IMAGENET,
    "nclpp_r50_inat": dict(_NCLPP_IMAGENET, epochs=400, batch_size=512, model_kwargs=dict(head_scale=32.0),
                           loss_kwargs=dict(_NCLPP_LOSS, num_hard=2442)),
    "nclpp_r152_placeslt": dict(epochs=30, opt="sgd", lr=0.02, momentum=0.9, weight_decay=2e-4, sched="multistep",
                                decay_milestones=[11, 21], decay_rate=0.1, train_transform="nclpp_imagenet",
                                seed=42, loss_kwargs=dict(_NCLPP_LOSS, num_hard=122)),
    "ldam_drw_r32_cifar10lt": dict(_LDAM_CODE, drw_epoch=160,
                                   loss_kwargs=dict(max_margin=0.5, scale=30.0, drw_beta=0.9999)),
    "ce_r32_cifar10lt": dict(_LDAM_CODE, drw_epoch=None),
    "bsce_r32_cifar10lt": dict(_LDAM_CODE, drw_epoch=None),
}
DEMOS = {"demo_ride", "demo_ride_router", "demo_nclpp"}  # a few minutes on a laptop: no reference recipe


def test_every_shipped_config_is_pinned():
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == set(RECIPES) | DEMOS


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_holds_its_reference_numbers(name):
    argv = ["--config", str(CONFIG_DIR / f"{name}.yaml")]
    args = parse_args(argv)
    for key, expected in RECIPES[name].items():
        got = getattr(args, key)
        if key in ("loss_kwargs", "model_kwargs"):  # the pinned options; others may be added
            got = {option: (got or {}).get(option) for option in expected}
        if isinstance(expected, float):
            assert got == pytest.approx(expected, rel=1e-12), key
        else:
            assert got == expected, key

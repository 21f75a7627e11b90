#!/usr/bin/env python3
"""Make the converter's test fixtures (``tests/convert/fixtures/``) by running the reference
repositories' own code: checkpoints in each trainer's exact save format, and the reference
networks' own outputs on a fixed batch beside them. Only the generated files are committed.

    for repo in ride:frank-xwang/RIDE-LongTailRecognition ncl:Bazinga699/NCL ldam:kaidic/LDAM-DRW; do
        mkdir -p /tmp/${repo%%:*}; git -C <mirror of ${repo#*:}> archive HEAD lib config main *.py models | tar -x -C /tmp/${repo%%:*}
        git -C <mirror of ${repo#*:}> rev-parse HEAD > /tmp/${repo%%:*}/.commit   # recorded in the fixtures
    done
    python scripts/make_reference_fixtures.py --ride /tmp/ride --ncl /tmp/ncl --ldam /tmp/ldam \\
        --out tests/convert/fixtures

Each network gets its code's own random initialisation (seeded), then batch-norm statistics
calibrated on 8 random batches in train mode (so running means and variances are not the trivial
0 / 1), and, for a RIDE router, an output bias that sends about half of the batch on to the next
expert (so routed inference uses 1, 2 and 3 experts). It is saved the way its trainer saves:

* RIDE: ``BaseTrainer._save_checkpoint`` itself on a stand-in trainer holding the real model,
  optimizer, loss and ``parse_config.ConfigParser`` (the repository's CIFAR configs), single-GPU or,
  for the ``module.`` case, the model under ``torch.nn.DataParallel``;
* NCL: the dict ``main/multi_network_train_final.py`` saves (``state_dict`` of the DataParallel model,
  ``epoch``, ``best_result``, ``best_epoch``, ``scheduler``, ``optimizer``), with its own network,
  optimizer and scheduler built from ``config/CIFAR/CIFAR100/cifar100_im100_NCL++.yaml`` (10 classes);
* LDAM-DRW: the dict ``cifar_train.py`` hands to ``utils.save_checkpoint``.

``<name>.expected.safetensors`` holds the batch (``images``, 16 x 3 x 32 x 32, normal noise, seed 0)
and the reference's outputs on it in eval mode: ``expert_<i>`` (each expert's scaled logits),
``ensemble`` (their mean) and, with a router, ``routed`` and ``experts_used`` (the EA model's own
test-time forward). LDAM-DRW's network outputs cosines (its loss applies s = 30): ``cosines``.

For ResNet-50, ResNeXt-50 and ResNet-152 (too big to commit) ``<name>.keys.json`` lists the
reference network's state-dict keys and shapes.

The reference code needs two shims on this CPU machine, neither touching the networks: CUDA calls
are no-ops, NCL's ``yacs`` config is read by a small stand-in (a dict with attribute access and
``merge_from_file``) and its unused ``cv2`` import gets an empty module.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import yaml
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_shims import cuda_calls_on_cpu  # noqa: E402  (imports timm_longtail first: torchvision shim)

BATCH = 16
CIFAR100_COUNTS = [int(500 * 0.01 ** (i / 99)) for i in range(100)]
CIFAR10_COUNTS = [int(5000 * 0.01 ** (i / 9)) for i in range(10)]


def _commit(src: Path) -> str:
    marker = src / ".commit"
    if marker.is_file():
        return marker.read_text().strip()
    return "unknown"


def _images() -> torch.Tensor:
    return torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _calibrate_bn(forward) -> None:
    """Eight random batches through the network in train mode: running statistics that are not 0 / 1."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(8):
            forward(torch.randn(64, 3, 32, 32, generator=generator) * 1.5 + 0.2)


def _save_expected(path: Path, tensors: dict, metadata: dict) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={k: json.dumps(v) for k, v in metadata.items()})


# ----- RIDE -----------------------------------------------------------------------------------

def _ride_config(src: Path, name: str, stage: str, classes: int, experts: int) -> dict:
    reference = {"experts": "configs/config_imbalance_cifar100_ride.json",
                 "router": "configs/config_imbalance_cifar100_ride_ea.json"}[stage]
    config = json.loads((src / reference).read_text())
    config["name"] = name
    config["arch"]["args"].update(num_classes=classes, num_experts=experts)
    if classes == 10:
        config["data_loader"]["type"] = "ImbalanceCIFAR10DataLoader"
        if stage == "router":
            config["arch"]["args"]["top_choices_num"] = 10
    return config


def _router_margin(backbone, shared: torch.Tensor, experts_logits: list) -> float:
    """The smallest |router logit| among the decisions the EA network's test-time forward takes on
    this batch (its own pieces, in its order): a fixture whose decisions sit near 0 would flip on a
    rounding difference."""
    active = torch.ones(shared.shape[0], dtype=torch.bool)
    total, margin = experts_logits[0].clone(), float("inf")
    for i in range(1, len(experts_logits)):
        backbone._separate_part(shared[active], i - 1)  # sets backbone.feat for these samples
        logits = backbone.pred_expert_help((backbone.feat, total[active] / i), i - 1).view(-1)
        margin = min(margin, float(logits.abs().min()))
        active[active.clone()] = torch.sigmoid(logits) > 0.5
        if not active.any():
            break
        total[active] += experts_logits[i][active]
    return margin


def _router_logits(backbone, shared: torch.Tensor, experts_logits: list, router: int) -> torch.Tensor:
    """Router ``router``'s logits on the samples that reach it, as the EA forward computes them."""
    active = torch.ones(shared.shape[0], dtype=torch.bool)
    total = experts_logits[0].clone()
    for i in range(1, router + 2):
        backbone._separate_part(shared[active], i - 1)
        logits = backbone.pred_expert_help((backbone.feat, total[active] / i), i - 1).view(-1)
        if i - 1 == router:
            return logits
        active[active.clone()] = torch.sigmoid(logits) > 0.5
        total[active] += experts_logits[i][active]
    raise AssertionError(router)


def _split_routers(backbone, shared: torch.Tensor, experts_logits: list) -> None:
    """Each router sends about half of the samples that reach it on, the threshold midway between the
    two middle logits: router 0 through the shared output bias; router i > 0 through its hidden unit
    i, made a constant (weights 0, bias = the shift) and silenced (bias -1e4) in every other router,
    so the shared output weight on it (+-1) moves router i alone."""
    fc, hidden = backbone.expert_help_pred_fc, backbone.expert_help_pred_hidden_fcs
    top_k = backbone.top_choices_num
    for i in range(1, len(hidden)):
        hidden[i].weight[i] = 0.0
        hidden[i].bias[i] = 0.0
        for j, layer in enumerate(hidden):
            if j != i:
                layer.bias[i] = -1e4
    for router in range(len(hidden)):
        logits = _router_logits(backbone, shared, experts_logits, router).sort().values
        if logits.numel() < 2:
            return
        middle = float(logits[logits.numel() // 2 - 1] + logits[logits.numel() // 2]) / 2
        if router == 0:
            fc.bias -= middle
        else:
            fc.weight[0, top_k + router] = -1.0 if middle > 0 else 1.0
            hidden[router].bias[router] = abs(middle)


def _ride_network(src: Path, name: str, stage: str, classes: int, experts: int, seed: int):
    """A RIDE network from its code: initialised, BN calibrated, router biased (module docstring);
    the reference's outputs on the fixed batch, and the smallest router margin."""
    import model.loss as module_loss
    import model.model as module_arch
    from parse_config import ConfigParser

    torch.manual_seed(seed)
    config = ConfigParser(_ride_config(src, name, stage, classes, experts), run_id=f"fixture{seed}")
    model = config.init_obj("arch", module_arch)
    backbone = model.backbone
    counts = CIFAR100_COUNTS if classes == 100 else CIFAR10_COUNTS
    if stage == "router":
        criterion = config.init_obj("loss", module_loss, cls_num_list=counts)
        targets = torch.randint(0, classes, (64,), generator=torch.Generator().manual_seed(2))
        model.train()
        _calibrate_bn(lambda x: model(x, target=targets))
    else:  # train.py passes num_experts only to losses that ask for it
        loss_class = getattr(module_loss, config["loss"]["type"])
        extra = dict(num_experts=experts) if getattr(loss_class, "require_num_experts", False) else {}
        criterion = config.init_obj("loss", module_loss, cls_num_list=counts, **extra)
        model.train()
        _calibrate_bn(model)
    model.eval()
    images = _images()
    margin = float("inf")
    with torch.no_grad():
        if stage == "router":  # the EA network's own pieces, every expert on the whole batch
            shared = backbone.layer1(torch.relu(backbone.bn1(backbone.conv1(images))))
            experts_logits = [backbone._separate_part(shared, i) for i in range(experts)]
            _split_routers(backbone, shared, experts_logits)
            margin = _router_margin(backbone, shared, experts_logits)
        else:  # the stage-1 network keeps each expert's scaled logits of its last forward
            model(images)
            experts_logits = list(backbone.logits)
    expected = {f"expert_{i}": logits for i, logits in enumerate(experts_logits)}
    expected["ensemble"] = torch.stack(experts_logits).mean(0)
    if stage == "router":
        with torch.no_grad():
            routed, used = model(images)
        expected["routed"], expected["experts_used"] = routed, used.view(-1)
    return config, model, criterion, images, expected, margin


def _ride_fixture(src: Path, out: Path, name: str, *, stage: str, classes: int, experts: int, data_parallel: bool,
                  seed: int) -> dict:
    """Saved by the trainer's own ``_save_checkpoint``. A routed fixture takes the first seed from
    ``seed`` whose router decisions all lie 1e-3 or more from the threshold and whose batch uses
    every count of experts from 1 to E."""
    from base.base_trainer import BaseTrainer

    for seed in range(seed, seed + 50):
        config, model, criterion, images, expected, margin = _ride_network(src, name, stage, classes, experts, seed)
        used = set(expected["experts_used"].tolist()) if "experts_used" in expected else None
        if used is None or (margin >= 1e-3 and used == set(range(1, experts + 1))):
            break
    else:
        raise SystemExit(f"no seed gives {name} a router that uses 1..{experts} experts with a margin")
    optimizer = config.init_obj("optimizer", torch.optim, model.parameters())
    trainer = SimpleNamespace(model=nn.DataParallel(model) if data_parallel else model, optimizer=optimizer,
                              mnt_best=np.float64(0.4861), config=config, criterion=criterion,
                              checkpoint_dir=out, logger=logging.getLogger("fixture"))
    epoch = config["trainer"]["epochs"]
    BaseTrainer._save_checkpoint(trainer, epoch)  # the trainer's own save: checkpoint-epoch<N>.pth
    (out / f"checkpoint-epoch{epoch}.pth").rename(out / f"{name}.pth")
    _save_expected(out / f"{name}.expected.safetensors", {"images": images, **expected},
                   dict(reference="frank-xwang/RIDE-LongTailRecognition", commit=_commit(src), stage=stage,
                        classes=classes, experts=experts, data_parallel=data_parallel, seed=seed,
                        router_margin=None if margin == float("inf") else round(margin, 6)))
    return dict(file=f"{name}.pth", seed=seed, router_margin=margin,
                experts_used=expected.get("experts_used", torch.zeros(0)).tolist())


def _ride_keys(src: Path, out: Path, name: str, model_type: str, args: dict) -> None:
    import model.model as module_arch

    model = getattr(module_arch, model_type)(**args)
    keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    (out / f"{name}.keys.json").write_text(json.dumps(dict(
        reference="frank-xwang/RIDE-LongTailRecognition", commit=_commit(src), model=model_type, args=args,
        keys=keys), indent=0) + "\n")


# ----- NCL ------------------------------------------------------------------------------------

class _CfgNode(dict):
    """Stands in for ``yacs.config.CfgNode``: nested attribute access, YAML merge, freeze no-ops."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def merge_from_file(self, path):
        self._merge(yaml.safe_load(Path(path).read_text()))

    def _merge(self, values):
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(self.get(key), _CfgNode):
                self[key]._merge(value)
            else:
                self[key] = self._decode(value)

    @staticmethod
    def _decode(value):
        """yacs reads a YAML string as a Python literal where it is one (``2e-4``, ``(32, 32)``)."""
        if isinstance(value, str):
            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
        return value

    def merge_from_list(self, items):
        for key, value in zip(items[::2], items[1::2]):
            node = self
            *path, last = key.split(".")
            for part in path:
                node = node[part]
            node[last] = value

    def defrost(self):
        pass

    def freeze(self):
        pass


def _ncl_imports(src: Path):
    yacs, yacs_config = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    yacs_config.CfgNode = _CfgNode
    sys.modules.update({"yacs": yacs, "yacs.config": yacs_config, "cv2": types.ModuleType("cv2")})
    sys.path.insert(0, str(src / "lib"))
    from config import cfg
    from net import multi_Network
    from utils.utils import get_optimizer, get_scheduler
    return cfg, multi_Network, get_optimizer, get_scheduler


def _ncl_fixture(src: Path, out: Path, name: str, *, classes: int, seed: int) -> dict:
    cfg, multi_Network, get_optimizer, get_scheduler = _ncl_imports(src)
    cfg.merge_from_file(src / "config/CIFAR/CIFAR100/cifar100_im100_NCL++.yaml")
    torch.manual_seed(seed)
    model = multi_Network(cfg, mode="train", num_classes=classes)
    experts = model.network_num
    model.train()
    _calibrate_bn(lambda x: model([x] * experts, feature_flag=True))
    model.eval()
    images = _images()
    with torch.no_grad():
        logits = model(model([images] * experts, feature_flag=True), classifier_flag=True)
    expected = {f"expert_{i}": z for i, z in enumerate(logits)}
    expected["ensemble"] = torch.stack(logits).mean(0)
    optimizer = get_optimizer(cfg, model)
    scheduler = get_scheduler(cfg, optimizer)
    wrapped = nn.DataParallel(model)
    torch.save({  # main/multi_network_train_final.py's checkpoint dict
        "state_dict": wrapped.state_dict(), "epoch": 400, "best_result": np.float64(0.5512), "best_epoch": 391,
        "scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}, out / f"{name}.pth")
    _save_expected(out / f"{name}.expected.safetensors", {"images": images, **expected},
                   dict(reference="Bazinga699/NCL", commit=_commit(src), classes=classes, experts=experts, seed=seed,
                        config="config/CIFAR/CIFAR100/cifar100_im100_NCL++.yaml"))
    return dict(file=f"{name}.pth")


def _ncl_keys(src: Path, out: Path, name: str, backbone: str, experts: int, classes: int) -> None:
    cfg, multi_Network, _, _ = _ncl_imports(src)
    cfg.merge_from_file(src / "config/ImageNet_LT/ImageNet_LT.yaml")
    cfg.BACKBONE.MULTI_NETWORK_TYPE = [backbone] * experts
    cfg.BACKBONE.PRETRAINED_MODEL = ""
    model = multi_Network(cfg, mode="test", num_classes=classes)
    keys = [[k, list(v.shape)] for k, v in nn.DataParallel(model).state_dict().items()]
    (out / f"{name}.keys.json").write_text(json.dumps(dict(
        reference="Bazinga699/NCL", commit=_commit(src), model="multi_Network", backbone=backbone, experts=experts,
        classes=classes, config="config/ImageNet_LT/ImageNet_LT.yaml", keys=keys), indent=0) + "\n")


# ----- LDAM-DRW -------------------------------------------------------------------------------

def _ldam_fixture(src: Path, out: Path, name: str, *, seed: int) -> dict:
    sys.path.insert(0, str(src))
    import models as ldam_models

    torch.manual_seed(seed)
    model = ldam_models.resnet32(num_classes=10, use_norm=True)
    model.train()
    _calibrate_bn(model)
    model.eval()
    images = _images()
    with torch.no_grad():
        cosines = model(images)
    wrapped = nn.DataParallel(model)  # cifar_train.py trains (and saves) under DataParallel
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=2e-4)
    torch.save({"epoch": 200, "arch": "resnet32", "state_dict": wrapped.state_dict(),
                "best_acc1": torch.tensor(77.03), "optimizer": optimizer.state_dict()}, out / f"{name}.pth.tar")
    _save_expected(out / f"{name}.expected.safetensors", {"images": images, "cosines": cosines},
                   dict(reference="kaidic/LDAM-DRW", commit=_commit(src), classes=10, seed=seed))
    return dict(file=f"{name}.pth.tar")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ride", type=Path, required=True, help="an unmodified copy of RIDE-LongTailRecognition")
    parser.add_argument("--ncl", type=Path, required=True, help="an unmodified copy of Bazinga699/NCL")
    parser.add_argument("--ldam", type=Path, required=True, help="an unmodified copy of kaidic/LDAM-DRW")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cuda_calls_on_cpu()
    made = []
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)  # RIDE's ConfigParser makes saved/ folders and reads logger/logger_config.json here
        (Path(work) / "logger").mkdir()
        (Path(work) / "logger" / "logger_config.json").write_text((args.ride / "logger" / "logger_config.json").read_text())
        sys.path.insert(0, str(args.ride.resolve()))
        made.append(_ride_fixture(args.ride, out, "ride_r32_3e_ea_cifar100", stage="router", classes=100, experts=3,
                                  data_parallel=False, seed=0))
        made.append(_ride_fixture(args.ride, out, "ride_r32_2e_ea_cifar10_dataparallel", stage="router", classes=10,
                                  experts=2, data_parallel=True, seed=1))
        made.append(_ride_fixture(args.ride, out, "ride_r32_2e_stage1_cifar100", stage="experts", classes=100,
                                  experts=2, data_parallel=False, seed=2))
        _ride_keys(args.ride, out, "ride_resnext50_4e_ea_imagenet_lt", "ResNeXt50EAModel",
                   dict(num_classes=1000, reduce_dimension=True, num_experts=4, top_choices_num=50, use_norm=True))
        _ride_keys(args.ride, out, "ride_resnet50_3e_ea_inat2018", "ResNet50EAModel",
                   dict(num_classes=8142, reduce_dimension=True, num_experts=3, top_choices_num=50, use_norm=True))
        _ride_keys(args.ride, out, "ride_resnet50_6e_stage1_inat2018", "ResNet50Model",
                   dict(num_classes=8142, reduce_dimension=True, num_experts=6, use_norm=True))
        _ride_keys(args.ride, out, "ride_resnet152_2e_stage1_imagenet_lt", "ResNet152Model",
                   dict(num_classes=1000, reduce_dimension=True, num_experts=2, use_norm=True))
        for module in [m for m in sys.modules if m.split(".")[0] in ("model", "utils", "base", "data_loader",
                                                                       "logger", "parse_config", "trainer")]:
            del sys.modules[module]  # RIDE's top-level packages share names with NCL's (utils)
        sys.path.remove(str(args.ride.resolve()))
        made.append(_ncl_fixture(args.ncl, out, "ncl_r32_2e_cifar10", classes=10, seed=3))
        _ncl_keys(args.ncl, out, "ncl_resnet50_3e_imagenet_lt", "res50", 3, 1000)
        _ncl_keys(args.ncl, out, "ncl_resnet152_3e_places_lt", "res152", 3, 365)
        made.append(_ldam_fixture(args.ldam, out, "ldam_drw_r32_cifar10", seed=4))
    print(json.dumps(made))


if __name__ == "__main__":
    main()

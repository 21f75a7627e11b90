"""RIDE and NCL++ models; importing this registers every ``ride_*`` and ``nclpp_*`` with timm."""
from ._cfgs import CIFAR_MEAN, CIFAR_STD
from ._compute import ComputeProfile, count_macs, measure_compute
from ._experts import CosineLinear, ExpertHead, ExpertRouter, MultiExpertNet, parse_forward_mode
from .nclpp import NCLPPResNet
from .ride import RIDEResNet

__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "ComputeProfile", "CosineLinear", "ExpertHead", "ExpertRouter", "MultiExpertNet", "NCLPPResNet",
    "RIDEResNet", "count_macs", "measure_compute", "parse_forward_mode",
]

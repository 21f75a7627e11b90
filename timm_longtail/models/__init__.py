"""RIDE and NCL++ models; importing this registers every ``ride_*`` and ``nclpp_*`` with timm."""
from . import weights  # the published-weights table, SHA-256 checks and the export format (public: hub/ and zoo/ use it)
from ._cfgs import HF_ORG, dataset_tag, hub_repo_id
from ._compute import ComputeProfile, count_macs, measure_compute
from ._experts import CosineLinear, ExpertHead, ExpertRouter, MultiExpertNet, parse_forward_mode
from .nclpp import NCLPPResNet
from .ride import RIDEResNet

__all__ = [
    "HF_ORG", "ComputeProfile", "CosineLinear", "ExpertHead", "ExpertRouter",
    "MultiExpertNet", "NCLPPResNet", "RIDEResNet", "count_macs", "dataset_tag", "hub_repo_id", "measure_compute",
    "parse_forward_mode", "weights",
]

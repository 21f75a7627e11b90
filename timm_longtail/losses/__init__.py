"""Training losses of the long-tail methods, one small ``nn.Module`` each.

``build_loss(method, class_counts, ...)`` gives the loss of a method with one calling convention,
``loss(expert_logits (E, N, C), target (N,))``; the modules below can also be used on their own.
"""
from ._common import LossModule
from .balanced import BalancedSoftmaxCE
from .build import LOSS_METHODS, LOSS_OPTIONS, ExpertSumCE, build_loss
from .ldam import LDAMDRWLoss, LDAMLoss, drw_class_weights, ldam_margins
from .nclpp import NCLPPLoss, hard_category_count, hard_category_mask
from .ride import DistillationLoss, RIDELoss, RouterLoss, diversity_temperatures, router_targets

__all__ = [
    "LossModule", "BalancedSoftmaxCE", "ExpertSumCE", "LDAMLoss", "LDAMDRWLoss", "RIDELoss",
    "RouterLoss", "DistillationLoss", "NCLPPLoss", "build_loss", "drw_class_weights", "ldam_margins",
    "diversity_temperatures", "router_targets", "hard_category_mask", "hard_category_count",
    "LOSS_METHODS", "LOSS_OPTIONS",
]

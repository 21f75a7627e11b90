"""The papers' analyses as functions on a model's outputs (``analyze.py`` runs them as commands).

One module per analysis, each a pure function of logits (and labels, class counts, shot split):
:mod:`.hardest_negative` (RIDE Fig. 1b), :mod:`.expert_usage` (RIDE Fig. 6),
:mod:`.disagreement` (NCL++ Fig. 2a), :mod:`.agnostic` (SADE's test-agnostic protocol),
:mod:`.calibration`, :mod:`.bias_variance` (RIDE Fig. 1a, over several models) and :mod:`.lossless`
(two versions of the same images: a dataset's copy and the lossless originals). :func:`collect_outputs`
runs a model once over a set in every mode needed.
"""
from .agnostic import TEST_DISTRIBUTIONS, agnostic_accuracy, agnostic_class_counts
from .bias_variance import bias_variance, main_prediction
from .calibration import calibration, calibration_errors
from .disagreement import expert_disagreement, pairwise_kl
from .expert_usage import expert_usage
from .groups import SPLITS, split_masks
from .hardest_negative import hardest_negative, hardest_negative_scores
from .lossless import measure_lossless_subset, paired_accuracy
from .outputs import ModelOutputs, collect_outputs, expert_modes

__all__ = [
    "ModelOutputs",
    "SPLITS",
    "TEST_DISTRIBUTIONS",
    "agnostic_accuracy",
    "agnostic_class_counts",
    "bias_variance",
    "calibration",
    "calibration_errors",
    "collect_outputs",
    "expert_disagreement",
    "expert_modes",
    "expert_usage",
    "hardest_negative",
    "hardest_negative_scores",
    "main_prediction",
    "measure_lossless_subset",
    "pairwise_kl",
    "paired_accuracy",
    "split_masks",
]

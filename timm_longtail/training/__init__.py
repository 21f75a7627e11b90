"""The training behind ``train.py``: method checks, stages, epochs, checkpoints, resume.

``config`` parses the command line / YAML config, ``methods`` knows what each method needs,
``assembly`` builds the run's pieces, ``tasks`` holds each stage as a timm task, ``loop`` runs one
epoch, ``loggers`` writes W&B and TensorBoard, ``runner`` ties them together; ``train.main(argv)`` is the
entry point.
"""
from .config import build_parser, given_settings, known_keys, load_config, load_recipe, parse_args
from .methods import METHODS, MethodSpec
from .runner import run

__all__ = ["METHODS", "MethodSpec", "build_parser", "given_settings", "known_keys", "load_config", "load_recipe",
           "parse_args", "run"]

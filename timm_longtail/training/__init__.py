"""The training loop behind ``train.py``: recipe checks, stages, epochs, checkpoints, resume.

``config`` parses the command line / YAML recipe, ``recipe`` knows what each method needs,
``loop`` runs one epoch, ``runner`` ties them together; ``train.main(argv)`` is the entry point.
"""
from .config import build_parser, known_keys, load_recipe, parse_args
from .recipe import METHODS, MethodSpec
from .runner import run

__all__ = ["METHODS", "MethodSpec", "build_parser", "known_keys", "load_recipe", "parse_args", "run"]

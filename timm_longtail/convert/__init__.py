"""Checkpoints saved by the reference repositories' own trainers (RIDE's, NCL's, LDAM-DRW's) as timm
models: read without running their pickled code (:mod:`._pickle`), recognised and mapped one to one
onto our names (:mod:`.layouts`)."""
from ._pickle import ForeignObject, foreign_pickle_globals, load_foreign_checkpoint
from .layouts import ReferenceLayout, detect_layout, is_reference_state_dict, map_state_dict

__all__ = ["ForeignObject", "ReferenceLayout", "detect_layout", "foreign_pickle_globals", "is_reference_state_dict",
           "load_foreign_checkpoint", "map_state_dict"]

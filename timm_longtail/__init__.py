"""timm-longtail: RIDE and NCL++ multi-expert long-tail models as timm models.

Importing the package registers every ``ride_*`` and ``nclpp_*`` model with timm.
"""
from ._compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"

from . import models  # noqa: E402,F401  (registers the models with timm)

"""The small-image training recipes as batched tensor ops, for images held on the training device.

``create_train_transform`` works on one PIL image at a time in loader worker processes. For the
small-image sets (decoded once into a uint8 array) the same augmentation can run on a whole batch
where the model runs: no worker processes, no per-image Python, no copies between processes.
:class:`BatchAugment` draws every sample's own parameters from one ``torch.Generator`` (so a batch
depends only on the generator's seed, which is what keeps ``--resume`` exact) and applies:

``ldam_cifar``
    random crop (zero padding ``size / 8``), horizontal flip, normalisation.
``ride_cifar``
    the same plus a rotation of ``U(-15, 15)`` degrees (nearest neighbour, zero fill), as
    torchvision's ``RandomRotation(15)`` after the crop and flip.

The parameter distributions are those of torchvision's ``RandomCrop`` (offsets uniform over
``0..2p``), ``RandomHorizontalFlip`` (p = 0.5) and ``RandomRotation``. The crop and flip give the
same pixels as the PIL path; the rotation is torchvision's tensor rotation, which differs from
PIL's at a few nearest-neighbour boundary pixels. ``nclpp_cifar`` (AutoAugment + Cutout) has no
batched form here yet and stays on the worker path.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .._compat import ensure_torchvision_importable
from ..errors import UserInputError
from .transforms import CIFAR_MEAN, CIFAR_STD

ensure_torchvision_importable()

from torchvision.transforms.v2 import InterpolationMode  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

__all__ = ["BATCH_RECIPES", "BatchAugment"]

BATCH_RECIPES = {"ldam_cifar": 0.0, "ride_cifar": 15.0}  # recipe -> rotation range in degrees


class BatchAugment:
    """A small-image training recipe applied to a ``(B, H, W, 3)`` uint8 batch on any device.

    Returns ``(B, 3, H, W)`` float32 normalised images. Draw order from the generator (CPU):
    row offsets, column offsets, flips, then angles when the recipe rotates.
    """

    def __init__(self, recipe: str, img_size: int, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None):
        if recipe not in BATCH_RECIPES:
            raise UserInputError(f"--device-augment has no batched form of the {recipe!r} augmentation; "
                                 f"it supports {', '.join(BATCH_RECIPES)} (leave it off for the others)")
        self.recipe = recipe
        self.size = int(img_size)
        self.padding = self.size // 8
        self.degrees = BATCH_RECIPES[recipe]
        self.mean = tuple(mean or CIFAR_MEAN)
        self.std = tuple(std or CIFAR_STD)

    def draw(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Every sample's parameters, on the CPU: ``top``, ``left`` (crop offsets in the padded
        image), ``flip`` (bool) and ``angle`` (degrees; zeros when the recipe does not rotate)."""
        span = 2 * self.padding + 1
        top = torch.randint(0, span, (batch,), generator=generator)
        left = torch.randint(0, span, (batch,), generator=generator)
        flip = torch.rand(batch, generator=generator) < 0.5
        angle = torch.zeros(batch)
        if self.degrees:
            angle = torch.empty(batch).uniform_(-self.degrees, self.degrees, generator=generator)
        return dict(top=top, left=left, flip=flip, angle=angle)

    def crop_flip(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> cropped and flipped ``(B, 3, S, S)`` uint8, one gather for the
        batch (torchvision's crop and flip take one offset per call, not one per sample)."""
        if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise UserInputError(f"expected a (B, H, W, 3) uint8 batch, got {tuple(images.shape)} {images.dtype}")
        device, size, pad = images.device, self.size, self.padding
        padded = F.pad(images.permute(0, 3, 1, 2), (pad, pad, pad, pad))  # zeros, as RandomCrop(padding=p)
        top, left, flip = (params[k].to(device) for k in ("top", "left", "flip"))
        steps = torch.arange(size, device=device)
        rows = top[:, None] + steps  # (B, S)
        cols = left[:, None] + torch.where(flip[:, None], size - 1 - steps, steps)  # flip after the crop
        batch = torch.arange(images.shape[0], device=device)[:, None, None]
        return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def rotate(self, images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Each image by its own angle, torchvision's tensor rotation (nearest, zero fill)."""
        return torch.stack([TF.rotate(image, float(angle), interpolation=InterpolationMode.NEAREST, fill=0.0)
                            for image, angle in zip(images, angles.tolist())])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 1] -> (x - mean) / std, as ``ToTensor`` + ``Normalize``."""
        return TF.normalize(images.float().div_(255), list(self.mean), list(self.std))

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        params = self.draw(images.shape[0], generator)
        out = self.crop_flip(images, params)
        if self.degrees:
            out = self.rotate(out, params["angle"])
        return self.normalize(out)

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
``nclpp_cifar``
    random crop and flip, torchvision's AutoAugment CIFAR-10 policy, Cutout of ``size / 2`` px,
    normalisation (NCL++'s CIFAR pipeline). Each sample draws its own sub-policy, probabilities
    and signs as ``T.AutoAugment.get_params`` does; the samples that drew the same operation and
    magnitude go through torchvision's op together (at most 2 x 50 groups per batch).

The parameter distributions are those of torchvision's ``RandomCrop`` (offsets uniform over
``0..2p``), ``RandomHorizontalFlip`` (p = 0.5), ``RandomRotation``, ``AutoAugment`` and our
:class:`~timm_longtail.data.transforms.Cutout`. The crop and flip give the same pixels as the PIL
path; rotation and the AutoAugment ops are torchvision's tensor ops, which differ from PIL's at a
few nearest-neighbour boundary pixels (and by rounding in the colour ops).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .._compat import ensure_torchvision_importable
from ..errors import UserInputError
from .transforms import CIFAR_MEAN, CIFAR_STD

ensure_torchvision_importable()

from torchvision import transforms as T  # noqa: E402
# torchvision's own AutoAugment op table (private, no public per-op form): the same ops and
# magnitudes as the PIL path's T.AutoAugment, applied here to a group of samples at once.
from torchvision.transforms.autoaugment import _apply_op  # noqa: E402
from torchvision.transforms.v2 import InterpolationMode  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

__all__ = ["BATCH_RECIPES", "BatchAugment", "BatchAutoAugment", "BatchRecipe", "check_batch_recipe"]


@dataclass(frozen=True)
class BatchRecipe:
    """What a small-image recipe does after the crop and flip."""

    rotation: float = 0.0  # degrees: U(-rotation, rotation), nearest, zero fill
    autoaugment: bool = False  # torchvision's AutoAugment, CIFAR-10 policy
    cutout: bool = False  # a black square of half the image size, after AutoAugment


BATCH_RECIPES = {
    "ldam_cifar": BatchRecipe(),
    "ride_cifar": BatchRecipe(rotation=15.0),
    "nclpp_cifar": BatchRecipe(autoaugment=True, cutout=True),
}


def check_batch_recipe(recipe: Optional[str]) -> str:
    """``recipe`` if it has a batched form, else one clear error naming those that have."""
    if recipe not in BATCH_RECIPES:
        raise UserInputError(f"--device-augment has no batched form of the {recipe!r} augmentation; "
                             f"it supports {', '.join(BATCH_RECIPES)} (leave it off for the others)")
    return recipe


class BatchAutoAugment:
    """torchvision's ``AutoAugment`` (CIFAR-10 policy, nearest, zero fill) with one draw per sample.

    ``draw`` follows ``T.AutoAugment.get_params`` per sample: a sub-policy uniformly from the 25,
    two ``U(0, 1)`` numbers (op ``i`` runs when the ``i``-th is at most its probability) and two
    fair signs (negative when 0) for the signed magnitudes.
    """

    NUM_BINS = 10  # torchvision's AutoAugment magnitude bins

    def __init__(self, img_size: int):
        reference = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
        self.policies = reference.policies
        self.space = reference._augmentation_space(self.NUM_BINS, (img_size, img_size))

    def draw(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return dict(policy=torch.randint(len(self.policies), (batch,), generator=generator),
                    probs=torch.rand(batch, 2, generator=generator),
                    signs=torch.randint(2, (batch, 2), generator=generator))

    def magnitude(self, op_name: str, magnitude_id: Optional[int], sign: int) -> float:
        """torchvision's magnitude of an op, negated for sign 0 where the op is signed."""
        magnitudes, signed = self.space[op_name]
        value = float(magnitudes[magnitude_id]) if magnitude_id is not None else 0.0
        return -value if signed and sign == 0 else value

    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 -> the same, each sample through its own sub-policy."""
        out = images.clone()
        policy, probs, signs = (params[k].tolist() for k in ("policy", "probs", "signs"))
        for slot in (0, 1):  # a sub-policy's first op, then its second, as torchvision applies them
            groups: dict[tuple[str, float], list[int]] = {}
            for row, (chosen, prob, sign) in enumerate(zip(policy, probs, signs)):
                op_name, p, magnitude_id = self.policies[chosen][slot]
                if prob[slot] <= p:
                    key = (op_name, self.magnitude(op_name, magnitude_id, sign[slot]))
                    groups.setdefault(key, []).append(row)
            for (op_name, magnitude), rows in groups.items():
                index = torch.tensor(rows, device=out.device)
                out[index] = _apply_op(out[index], op_name, magnitude, InterpolationMode.NEAREST, None)
        return out


class BatchAugment:
    """A small-image training recipe applied to a ``(B, H, W, 3)`` uint8 batch on any device.

    Returns ``(B, 3, H, W)`` float32 normalised images. Draw order from the generator (CPU): row
    offsets, column offsets, flips, then angles when the recipe rotates, then the AutoAugment
    draws, then the Cutout centres (rows, columns).
    """

    def __init__(self, recipe: str, img_size: int, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None):
        self.recipe = check_batch_recipe(recipe)
        self.size = int(img_size)
        self.padding = self.size // 8
        self.spec = BATCH_RECIPES[recipe]
        self.degrees = self.spec.rotation
        self.autoaugment = BatchAutoAugment(self.size) if self.spec.autoaugment else None
        self.cutout_length = self.size // 2 if self.spec.cutout else 0  # as create_train_transform's Cutout
        self.mean = tuple(mean or CIFAR_MEAN)
        self.std = tuple(std or CIFAR_STD)

    def draw(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Every sample's parameters, on the CPU: ``top``, ``left`` (crop offsets in the padded
        image), ``flip`` (bool), ``angle`` (degrees; zeros when the recipe does not rotate), and
        where the recipe has them the AutoAugment draws and ``cutout`` centres ``(B, 2)``."""
        span = 2 * self.padding + 1
        top = torch.randint(0, span, (batch,), generator=generator)
        left = torch.randint(0, span, (batch,), generator=generator)
        flip = torch.rand(batch, generator=generator) < 0.5
        angle = torch.zeros(batch)
        if self.degrees:
            angle = torch.empty(batch).uniform_(-self.degrees, self.degrees, generator=generator)
        params = dict(top=top, left=left, flip=flip, angle=angle)
        if self.autoaugment is not None:
            params.update(self.autoaugment.draw(batch, generator))
        if self.cutout_length:
            params["cutout"] = torch.stack([torch.randint(self.size, (batch,), generator=generator),
                                            torch.randint(self.size, (batch,), generator=generator)], dim=1)
        return params

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

    def cutout(self, images: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Black out each image's ``length``-pixel square around its centre, clipped at the border
        (:class:`~timm_longtail.data.transforms.Cutout`: rows ``[y - l/2, y + l/2)``, the same in x)."""
        half = self.cutout_length // 2
        steps = torch.arange(self.size, device=images.device)
        y, x = (centres[:, k, None].to(images.device) for k in (0, 1))
        inside_rows = (steps >= y - half) & (steps < y + half)  # (B, S)
        inside_cols = (steps >= x - half) & (steps < x + half)
        hole = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]
        return images.masked_fill(hole, 0)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        params = self.draw(images.shape[0], generator)
        out = self.crop_flip(images, params)
        if self.degrees:
            out = self.rotate(out, params["angle"])
        if self.autoaugment is not None:
            out = self.autoaugment(out, params)
        if self.cutout_length:
            out = self.cutout(out, params["cutout"])
        return self.normalize(out)

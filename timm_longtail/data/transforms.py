"""Train/eval transforms of the RIDE and NCL++ recipes, built from timm and torchvision pieces.

Recipes (``create_train_transform(recipe)``):

``ride_cifar``
    random crop 32 (pad 4), horizontal flip, rotation +-15 deg, CIFAR-10 mean/std (RIDE's code).
``ldam_cifar``
    random crop 32 (pad 4), horizontal flip, CIFAR-10 mean/std: no rotation (the LDAM-DRW code,
    Cao et al. 2019, used by its LDAM-DRW and CE baselines).
``nclpp_cifar``
    random crop 32 (pad 4), flip, AutoAugment CIFAR-10 policy (torchvision; timm has only the
    ImageNet policies), Cutout 16 px, CIFAR-10 mean/std (NCL++'s code; not RandAugment).
``imagenet``
    random-resized crop 224, flip, colour jitter 0.4 (RIDE ImageNet-LT / Places-LT).
``inat``
    random-resized crop 224, flip (RIDE iNaturalist 2018).
``nclpp_imagenet``
    random-resized crop 224 (scale 0.08-1), flip, colour jitter 0.4, then timm RandAugment
    ``rand-n2-m10-mstd0.5`` (NCL++ ImageNet-LT / iNat / Places-LT), in that order.

Eval transforms come from a model's ``pretrained_cfg`` (:func:`create_eval_transform`) so a
checkpoint is evaluated with the resolution, crop and normalisation it was trained for.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn

from .._compat import ensure_torchvision_importable
from ..errors import UserInputError

ensure_torchvision_importable()

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform, resolve_data_config  # noqa: E402
from timm.data.auto_augment import rand_augment_transform  # noqa: E402
from timm.data.transforms import RandomResizedCropAndInterpolation  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from .benchmarks import CIFAR_MEAN, CIFAR_STD  # noqa: E402

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "Cutout",
    "MultiViewTransform",
    "TRAIN_RECIPES",
    "create_eval_transform",
    "create_train_transform",
    "eval_input_size",
]

TRAIN_RECIPES = ("ride_cifar", "ldam_cifar", "nclpp_cifar", "imagenet", "inat", "nclpp_imagenet")
_SMALL_IMAGE_RECIPES = ("ride_cifar", "ldam_cifar", "nclpp_cifar")  # names end in _cifar (train.py sizes by it)


class Cutout(nn.Module):
    """Zero one ``length x length`` square at a uniformly random centre (clipped at the border).

    Applied to the CHW tensor before normalisation, so the hole is black, as in DeVries & Taylor
    (2017) and NCL++'s CIFAR pipeline.
    """

    def __init__(self, length: int = 16):
        super().__init__()
        if length < 1:
            raise UserInputError(f"cutout length must be >= 1 pixel, got {length}")
        self.length = int(length)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        centre_y = int(torch.randint(height, (1,)))
        centre_x = int(torch.randint(width, (1,)))
        half = self.length // 2
        top, bottom = max(centre_y - half, 0), min(centre_y + half, height)
        left, right = max(centre_x - half, 0), min(centre_x + half, width)
        image = image.clone()
        image[..., top:bottom, left:right] = 0
        return image

    def extra_repr(self) -> str:
        return f"length={self.length}"


class MultiViewTransform:
    """Apply a random transform ``num_views`` times to one image and stack the results.

    Returns a ``(T, C, H, W)`` tensor, so a DataLoader batch is ``(B, T, C, H, W)``: image ``b``'s
    ``t``-th augmented copy is ``batch[b, t]``. NCL++ trains on ``T`` copies of every image (4 on
    CIFAR): the NCL++ losses want the ``T*B`` rows copy-major (row ``t*B + b`` is copy ``t`` of
    image ``b``): ``batch.transpose(0, 1).flatten(0, 1)`` with ``targets.repeat(T)``, as train.py does.
    """

    def __init__(self, transform: Callable, num_views: int):
        if num_views < 1:
            raise UserInputError(f"number of views must be >= 1, got {num_views}")
        self.transform = transform
        self.num_views = int(num_views)

    def __call__(self, image) -> torch.Tensor:
        return torch.stack([self.transform(image) for _ in range(self.num_views)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_views={self.num_views}, transform={self.transform!r})"


def _normalize(mean: Sequence[float], std: Sequence[float]) -> T.Normalize:
    return T.Normalize(mean=tuple(mean), std=tuple(std))


def create_train_transform(recipe: str, img_size: Optional[int] = None, mean: Optional[Sequence[float]] = None,
                           std: Optional[Sequence[float]] = None) -> Callable:
    """The training augmentation of a recipe (see the module docstring for each recipe).

    ``img_size`` defaults to 32 for the CIFAR recipes (padding stays ``img_size / 8``, 4 px at 32)
    and 224 otherwise; ``mean``/``std`` default to the recipe's statistics.
    """
    if recipe not in TRAIN_RECIPES:
        raise UserInputError(f"unknown augmentation recipe {recipe!r}: use one of {', '.join(TRAIN_RECIPES)}")
    small = recipe in _SMALL_IMAGE_RECIPES
    size = int(img_size or (32 if small else 224))
    mean = tuple(mean or (CIFAR_MEAN if small else IMAGENET_DEFAULT_MEAN))
    std = tuple(std or (CIFAR_STD if small else IMAGENET_DEFAULT_STD))
    if recipe == "ride_cifar":
        return T.Compose([
            T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(), T.RandomRotation(15),
            T.ToTensor(), _normalize(mean, std),
        ])
    if recipe == "ldam_cifar":
        return T.Compose([
            T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(), T.ToTensor(), _normalize(mean, std),
        ])
    if recipe == "nclpp_cifar":
        return T.Compose([
            T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(),
            T.AutoAugment(T.AutoAugmentPolicy.CIFAR10), T.ToTensor(), Cutout(size // 2), _normalize(mean, std),
        ])
    if recipe == "imagenet":
        return create_transform(size, is_training=True, color_jitter=0.4, interpolation="bilinear",
                                mean=mean, std=std)
    if recipe == "inat":
        return create_transform(size, is_training=True, color_jitter=None, interpolation="bilinear",
                                mean=mean, std=std)
    randaugment_params = dict(translate_const=int(size * 0.45),
                              img_mean=tuple(min(255, round(255 * m)) for m in mean))
    return T.Compose([
        RandomResizedCropAndInterpolation(size, scale=(0.08, 1.0), interpolation="bilinear"),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.4, 0.4, 0.4, 0.0),
        rand_augment_transform("rand-n2-m10-mstd0.5", randaugment_params),
        T.ToTensor(),
        _normalize(mean, std),
    ])


def create_eval_transform(model: Optional[nn.Module] = None, recipe: Optional[str] = None,
                          img_size: Optional[int] = None) -> Callable:
    """Deterministic eval transform: from ``model.pretrained_cfg`` when a model is given, else the recipe's.

    With a model, timm's ``resolve_data_config`` gives input size, crop_pct, interpolation and
    mean/std (``img_size`` overrides the size); CIFAR models use crop_pct 1 (a 32 px image passes
    unchanged). Without a model, CIFAR recipes only normalise and ImageNet recipes resize and
    centre-crop 224 at crop_pct 0.875.
    """
    if model is not None:
        overrides = {"input_size": (3, int(img_size), int(img_size))} if img_size else {}
        config = resolve_data_config(overrides, model=model)
        return create_transform(**config, is_training=False)
    recipe = recipe or "imagenet"
    if recipe not in TRAIN_RECIPES:
        raise UserInputError(f"unknown augmentation recipe {recipe!r}: use one of {', '.join(TRAIN_RECIPES)}")
    if recipe in _SMALL_IMAGE_RECIPES:
        return T.Compose([T.ToTensor(), _normalize(CIFAR_MEAN, CIFAR_STD)])
    return create_transform(int(img_size or 224), is_training=False, interpolation="bilinear", crop_pct=0.875,
                            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)


def eval_input_size(model: nn.Module, img_size: Optional[int] = None) -> Tuple[int, int, int]:
    """The ``(C, H, W)`` the eval transform produces for ``model`` (for compute counting)."""
    overrides = {"input_size": (3, int(img_size), int(img_size))} if img_size else {}
    return tuple(resolve_data_config(overrides, model=model)["input_size"])

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
    and signs as ``T.AutoAugment.get_params`` does. Each of a sub-policy's two ops is one pass over
    the batch: every kind of op is computed for all samples, each with its own magnitude, and each
    sample keeps the result of its own op (one gather); a skipped op keeps the pixels.

The work per batch is a fixed list of tensor ops, whatever the batch size and the draws, and
nothing is read back from the device: the draws are made on the CPU, looked up there in the policy
table (built once) and sent to the device in one copy (pinned and non-blocking on CUDA). A batch of
``meta`` tensors goes through, which is how the tests show the absence of host syncs.

The parameter distributions are those of torchvision's ``RandomCrop`` (offsets uniform over
``0..2p``), ``RandomHorizontalFlip`` (p = 0.5), ``RandomRotation``, ``AutoAugment`` and our
:class:`~timm_longtail.data.transforms.Cutout`. The crop and flip give the same pixels as the PIL
path. Rotation and the AutoAugment ops give the pixels of torchvision's tensor ops (``rotate``, and
``_apply_op`` per sample): the geometric ops sample the same float32 grid, the colour ops repeat
their float32 and integer arithmetic (tests/data/test_batch_augment.py compares every op at every
magnitude and sign, and whole batches over many seeds, pixel for pixel). Those tensor ops differ
from PIL's at a few nearest-neighbour boundary pixels and by rounding in the colour ops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .._compat import ensure_torchvision_importable
from ..errors import UserInputError
from .transforms import CIFAR_MEAN, CIFAR_STD

ensure_torchvision_importable()

from torchvision import transforms as T  # noqa: E402

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


# One op of one sample is a row of floats (every value exact in float32): its kind, the inverse affine
# matrix of the geometric ops, the blend weights of Brightness / Color / Contrast / Sharpness, the bit
# mask of Posterize and the threshold of Solarize (Invert is Solarize at 0). The neutral values
# (identity matrix, mask 255, threshold 256) leave the pixels alone.
_IDENTITY, _AFFINE, _BRIGHTNESS, _COLOR, _CONTRAST, _SHARPNESS, _POINTWISE, _AUTOCONTRAST, _EQUALIZE = range(9)
_KINDS = {
    "Identity": _IDENTITY, "ShearX": _AFFINE, "ShearY": _AFFINE, "TranslateX": _AFFINE, "TranslateY": _AFFINE,
    "Rotate": _AFFINE, "Brightness": _BRIGHTNESS, "Color": _COLOR, "Contrast": _CONTRAST, "Sharpness": _SHARPNESS,
    "Posterize": _POINTWISE, "Solarize": _POINTWISE, "Invert": _POINTWISE, "AutoContrast": _AUTOCONTRAST,
    "Equalize": _EQUALIZE,
}
_KIND, _THETA, _RATIO, _REST, _MASK, _THRESHOLD = 0, slice(1, 7), 7, 8, 9, 10
_ROW = 11


def _inverse_affine(op_name: str, magnitude: float, size: int) -> list[float]:
    """The ``(2, 3)`` matrix, row-major, taking an output pixel to the input pixel it shows, in
    torchvision's tensor convention (origin at the image centre), for a square image of ``size``.

    The float64 arithmetic follows torchvision's ``_apply_op`` step by step (its shears pass
    ``degrees(atan(m))`` and use the tangent of that back, and are pinned to the top-left corner;
    translations are whole pixels), so that the float32 matrices, and so the pixels, are its own.
    """
    half = size * 0.5
    if op_name == "Rotate":  # counter-clockwise by ``magnitude`` degrees about the centre
        angle = math.radians(-magnitude)
        return [math.cos(angle), math.sin(angle), 0.0, -math.sin(angle), math.cos(angle), 0.0]
    if op_name in ("TranslateX", "TranslateY"):
        shift = float(int(magnitude))
        return [1.0, 0.0, -shift, 0.0, 1.0, 0.0] if op_name == "TranslateX" else [1.0, 0.0, 0.0, 0.0, 1.0, -shift]
    angle = math.radians(math.degrees(math.atan(magnitude)))
    if op_name == "ShearX":
        slope = math.tan(angle)
        return [1.0, slope, (half + slope * half) - half, 0.0, 1.0, 0.0]
    if op_name == "ShearY":
        slope = math.sin(angle) / math.cos(angle)  # torchvision's ShearY matrix has sin / cos here, not tan
        return [1.0, 0.0, 0.0, slope, 1.0, (slope * half + half) - half]
    raise ValueError(f"{op_name!r} is not a geometric op")


def _op_row(op_name: str, magnitude: float, size: int) -> list[float]:
    """One op at one magnitude (torchvision's ``_apply_op`` arguments) as a row of op parameters."""
    if op_name not in _KINDS:
        raise ValueError(f"unknown AutoAugment op {op_name!r}")
    theta, ratio, mask, threshold = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 1.0, 255, 256.0
    kind = _KINDS[op_name]
    if kind == _AFFINE:
        theta = _inverse_affine(op_name, magnitude, size)
    elif _BRIGHTNESS <= kind <= _SHARPNESS:
        ratio = 1.0 + magnitude  # the blend weight of the image; the other image gets 1 - ratio (float64 first)
    elif op_name == "Posterize":
        mask = -(2 ** (8 - int(magnitude))) & 0xFF  # keep the top ``magnitude`` bits
    elif op_name == "Solarize":
        threshold = magnitude
    elif op_name == "Invert":
        threshold = 0.0
    return [float(kind), *theta, ratio, 1.0 - ratio, float(mask), threshold]


def _rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``(B,)`` degrees -> ``(B, 2, 3)`` float32 inverse matrices of torchvision's (v2) ``rotate``:
    counter-clockwise about the centre, the angle taken modulo 360 first, in float64 as it does."""
    turn = torch.remainder(angles.double(), 360.0)
    radians = -turn * (math.pi / 180)
    cos, sin = radians.cos(), radians.sin()
    zero = torch.zeros_like(cos)
    return torch.stack([cos, sin, zero, -sin, cos, zero], dim=1).view(-1, 2, 3).float()


def _warp(pixels: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` float pixel values -> uint8, each image through its own inverse matrix
    ``theta`` ``(B, 2, 3)`` (output pixel -> input pixel, origin at the centre); nearest neighbour,
    zero fill.

    The sampling grid is torchvision's (pixel centres at half-integers, the matrix divided by
    half the size, then ``x * a + y * b + c`` in float32), computed elementwise rather than with
    ``bmm``: bitwise the same on the CPU, and never TF32 on a GPU.
    """
    h, w = pixels.shape[-2:]
    scaled = torch.stack([theta[:, 0] / (0.5 * w), theta[:, 1] / (0.5 * h)], dim=-1)  # (B, 3, 2): x, y terms
    xs = torch.arange(w, dtype=torch.float32, device=pixels.device).sub_((w - 1) * 0.5)
    ys = torch.arange(h, dtype=torch.float32, device=pixels.device).sub_((h - 1) * 0.5)
    grid = (xs[None, None, :, None] * scaled[:, None, None, 0] + ys[None, :, None, None] * scaled[:, None, None, 1]
            + scaled[:, None, None, 2])  # (B, H, W, 2)
    out = F.grid_sample(pixels, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.to(torch.uint8)  # nearest: whole numbers already


def _grey(pixels: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` float pixel values -> ``(B, 1, H, W)`` luma, truncated to whole grey levels
    (torchvision's weights and its uint8 cast)."""
    r, g, b = pixels.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).trunc_().unsqueeze(1)


def _smooth(pixels: torch.Tensor) -> torch.Tensor:
    """Sharpness's degenerate image: inside a one-pixel border, the 3 x 3 neighbourhood with the
    centre weighted 5, / 13, rounded; the border pixels kept. The weighted sums are whole numbers
    (exact in float32) and ``sum / 13`` never lies within 1/26 of a rounding tie, so this rounds
    as torchvision's float32 convolution does, with plain sums instead of a convolution."""
    rows = pixels[..., :-2, :] + pixels[..., 1:-1, :] + pixels[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    out = pixels.clone()
    out[..., 1:-1, 1:-1] = box.add_(pixels[..., 1:-1, 1:-1], alpha=4).div_(13).round_()
    return out


def _autocontrast(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Each channel of each image stretched to 0..255 (``pixels`` is ``images`` as float); a flat
    channel kept."""
    low = images.amin(dim=(-2, -1), keepdim=True).float()
    span = images.amax(dim=(-2, -1), keepdim=True).float() - low
    flat = span == 0
    scale = torch.where(flat, 1.0, span.reciprocal() * 255)  # torchvision's 255 / span: 1 / span, then * 255
    low = torch.where(flat, 0.0, low)
    return ((pixels - low) * scale).clamp_(0, 255).to(torch.uint8)


def _equalize(images: torch.Tensor) -> torch.Tensor:
    """Each channel of each image through its own histogram-equalisation table, in integers: the
    step is the pixel count outside the highest occupied bin // 255, grey level ``v`` maps to
    ``(pixels below v + step // 2) // step``, and a channel with step 0 is kept."""
    b, c, h, w = images.shape
    flat = images.reshape(b * c, h * w)
    values = flat.long()
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=images.device)
    hist.scatter_add_(1, values, hist.new_ones(1, 1).expand_as(values))
    step = (h * w - hist.gather(1, flat.amax(1, keepdim=True).long())) // 255  # (B * C, 1)
    below = hist.cumsum(1) - hist  # pixels under each grey level
    table = ((below + step // 2) // step.clamp(min=1)).clamp_(0, 255)
    table = torch.where(step == 0, torch.arange(256, device=images.device), table)  # step 0: the identity
    return table.to(torch.uint8).gather(1, values).view_as(images)


def _pick(chosen: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``torch.where(chosen, new, old)`` for uint8 images, as uint8 arithmetic (exact modulo 256):
    the same pixels, several times faster than ``where`` on the CPU."""
    return old + (new - old) * chosen


def _apply_ops(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8, each sample through the op of its own row of ``rows`` ``(B, _ROW)``
    (same device): every kind of op on the whole batch, each sample keeping its own op's result."""
    column = rows[:, :, None, None, None]  # column[:, k]: (B, 1, 1, 1), broadcast over the pixels
    kind = column[:, _KIND]
    pixels = images.float()
    # Brightness, Color, Contrast and Sharpness blend the image with black, its grey, its mean grey or its
    # blur: the one that applies, picked by 0 / 1 factors (the sum of one value and zeros is exact)
    grey = _grey(pixels)
    other = (grey * (kind == _COLOR) + grey.mean(dim=(-3, -2, -1), keepdim=True) * (kind == _CONTRAST)
             + _smooth(pixels) * (kind == _SHARPNESS))
    blended = (pixels * column[:, _RATIO] + other * column[:, _REST]).clamp_(0, 255).to(torch.uint8)
    kept = images & column[:, _MASK].to(torch.uint8)  # Posterize, then Solarize (Invert: threshold 0)
    solarized = _pick(kept >= column[:, _THRESHOLD], 255 - kept, kept)
    results = torch.stack([images, _warp(pixels, rows[:, _THETA].reshape(-1, 2, 3)), blended, solarized,
                           _autocontrast(images, pixels), _equalize(images)], dim=1)
    # the kinds in the order of ``results``: identity, affine, the four blends, pointwise, autocontrast, equalize
    which = (kind - (kind - _BRIGHTNESS).clamp(0, _SHARPNESS - _BRIGHTNESS)).long().view(-1)
    return results[torch.arange(len(images), device=images.device), which]


class BatchAutoAugment:
    """torchvision's ``AutoAugment`` (CIFAR-10 policy, nearest, zero fill) with one draw per sample.

    ``draw`` follows ``T.AutoAugment.get_params`` per sample: a sub-policy uniformly from the 25,
    two ``U(0, 1)`` numbers (op ``i`` runs when the ``i``-th is at most its probability) and two
    fair signs (negative when 0) for the signed magnitudes. ``plan`` turns the draws into one op
    row per sample and slot (a lookup in a table built here once), ``apply`` runs one slot.
    """

    NUM_BINS = 10  # torchvision's AutoAugment magnitude bins

    def __init__(self, img_size: int):
        reference = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
        self.size = int(img_size)
        self.policies = reference.policies
        self.space = reference._augmentation_space(self.NUM_BINS, (self.size, self.size))
        # (sub-policy, slot, sign) -> op row; (sub-policy, slot) -> probability, float64 as torchvision compares
        self.table = torch.tensor([[[self.op_row(name, self.magnitude(name, bin_, sign)) for sign in (0, 1)]
                                    for name, _, bin_ in policy] for policy in self.policies], dtype=torch.float32)
        self.probability = torch.tensor([[p for _, p, _ in policy] for policy in self.policies], dtype=torch.float64)
        self.identity = torch.tensor(self.op_row("Identity", 0.0), dtype=torch.float32)

    def draw(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return dict(policy=torch.randint(len(self.policies), (batch,), generator=generator),
                    probs=torch.rand(batch, 2, generator=generator),
                    signs=torch.randint(2, (batch, 2), generator=generator))

    def magnitude(self, op_name: str, magnitude_id: Optional[int], sign: int) -> float:
        """torchvision's magnitude of an op, negated for sign 0 where the op is signed."""
        magnitudes, signed = self.space[op_name]
        value = float(magnitudes[magnitude_id]) if magnitude_id is not None else 0.0
        return -value if signed and sign == 0 else value

    def op_row(self, op_name: str, magnitude: float) -> list[float]:
        """The row of ``_apply_op(image, op_name, magnitude)`` for this image size."""
        return _op_row(op_name, magnitude, self.size)

    def plan(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The draws -> ``(B, 2, _ROW)`` float32 op rows (a sub-policy's first op, then its second),
        on the draws' device; an op whose draw exceeds its probability becomes the identity."""
        policy, probs, signs = (params[k] for k in ("policy", "probs", "signs"))
        table, probability = self.table.to(policy.device), self.probability.to(policy.device)
        rows = table[policy[:, None], torch.arange(2, device=policy.device), signs.long()]
        runs = probs.double() <= probability[policy]
        return torch.where(runs[..., None], rows, self.identity.to(policy.device))

    @staticmethod
    def apply(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 -> the same, sample ``b`` through the op of ``rows[b]`` ``(B, _ROW)``."""
        return _apply_ops(images, rows)

    def __call__(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 -> the same, each sample through its own sub-policy."""
        plan = self.plan(params).to(images.device)
        for slot in (0, 1):
            images = _apply_ops(images, plan[:, slot])
        return images


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
        self._moments: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # mean, std per device

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

    def to_device(self, params: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """The draws, turned into what the ops read (``rotation`` matrices, ``autoaugment`` op rows),
        packed into one float32 tensor (every value exact in float32) and sent to ``device`` in one
        copy, pinned and non-blocking on CUDA: no per-tensor transfers, no wait for the device."""
        parts = dict(top=params["top"][:, None], left=params["left"][:, None], flip=params["flip"][:, None])
        if self.degrees:
            parts["rotation"] = _rotation_matrices(params["angle"]).flatten(1)
        if self.autoaugment is not None:
            parts["autoaugment"] = self.autoaugment.plan(params).flatten(1)
        if self.cutout_length:
            parts["cutout"] = params["cutout"]
        packed = torch.cat([part.float() for part in parts.values()], dim=1)
        if device.type == "cuda":
            packed = packed.pin_memory()
        packed = packed.to(device, non_blocking=True)
        moved = dict(zip(parts, packed.split([part.shape[1] for part in parts.values()], dim=1)))
        moved.update(top=moved["top"][:, 0].long(), left=moved["left"][:, 0].long(), flip=moved["flip"][:, 0] > 0)
        if self.degrees:
            moved["rotation"] = moved["rotation"].reshape(-1, 2, 3)
        if self.autoaugment is not None:
            moved["autoaugment"] = moved["autoaugment"].reshape(-1, 2, _ROW)
        if self.cutout_length:
            moved["cutout"] = moved["cutout"].long()
        return moved

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
        """Each image by its own angle (degrees), torchvision's tensor rotation (nearest, zero fill),
        as one sampling pass over the batch."""
        return _warp(images.float(), _rotation_matrices(angles).to(images.device))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 1] -> (x - mean) / std, as ``ToTensor`` + ``Normalize``."""
        if images.device not in self._moments:  # made once per device, not copied there every batch
            self._moments[images.device] = tuple(torch.tensor(v, dtype=torch.float32).view(-1, 1, 1).to(images.device)
                                                  for v in (self.mean, self.std))
        mean, std = self._moments[images.device]
        return images.float().div_(255).sub_(mean).div_(std)

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
        """``(B, H, W, 3)`` uint8 on any device -> ``(B, 3, S, S)`` float32, the draws from ``generator``."""
        params = self.to_device(self.draw(images.shape[0], generator), images.device)
        out = self.crop_flip(images, params)
        if self.degrees:
            out = _warp(out.float(), params["rotation"])
        if self.autoaugment is not None:
            for slot in (0, 1):  # a sub-policy's first op, then its second, as torchvision applies them
                out = _apply_ops(out, params["autoaugment"][:, slot])
        if self.cutout_length:
            out = self.cutout(out, params["cutout"])
        return self.normalize(out)

"""The batched small-image recipes against torchvision's tensor ops (same pixels per draw) and the
PIL path (same pixels for the crop and flip, same distributions)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode
from torchvision.transforms import functional as F1
from torchvision.transforms.autoaugment import _apply_op
from torchvision.transforms.v2 import functional as F2

from timm_longtail.data import CIFAR_MEAN, CIFAR_STD, build_dataset, create_train_transform
from timm_longtail.data.batch_augment import BATCH_RECIPES, BatchAugment, BatchAutoAugment
from timm_longtail.data.transforms import Cutout
from timm_longtail.errors import UserInputError


def _pixels(n=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _coordinate_image():
    """Red = 7·column + 1, green = 7·row + 1: a crop's offset and flip can be read off its pixels."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = np.arange(32)[None, :] * 7 + 1
    image[..., 1] = np.arange(32)[:, None] * 7 + 1
    return image


def _unnormalize(x):
    mean, std = torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None]
    return (x * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)


def _read_draw(u8):
    """(top, left, flip) of a crop of the coordinate image, from its centre pixels (never padding)."""
    red, green, red_next = int(u8[0, 16, 16]), int(u8[1, 16, 16]), int(u8[0, 16, 17])
    column, row, flip = (red - 1) // 7, (green - 1) // 7, red_next < red
    left = (column + 16 - 31) + 4 if flip else column - 16 + 4  # offset in the padded image
    return row - 16 + 4, left, flip


def test_crop_and_flip_give_the_pil_paths_pixels():
    augment = BatchAugment("ldam_cifar", 32)
    image = _pixels()[0]
    pil = F1.pad(Image.fromarray(image), 4, fill=0)
    tops, lefts = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    for flip in (False, True):
        params = dict(top=tops.flatten(), left=lefts.flatten(), flip=torch.full((81,), flip))
        batch = augment.crop_flip(torch.from_numpy(image).expand(81, 32, 32, 3), params)
        for k, (top, left) in enumerate(zip(params["top"].tolist(), params["left"].tolist())):
            expected = F1.crop(pil, top, left, 32, 32)
            expected = F1.hflip(expected) if flip else expected
            assert np.array_equal(batch[k].permute(1, 2, 0).numpy(), np.asarray(expected)), (top, left, flip)


def test_rotation_is_torchvisions_and_agrees_with_pil():
    """One sampling pass for the batch gives torchvision's per-image tensor rotation pixel for pixel
    (the angles of many draws, and the edges: 0, +-15, exact degrees, tiny angles), and PIL's at all
    but a few nearest-neighbour ties."""
    augment = BatchAugment("ride_cifar", 32)
    images = torch.from_numpy(_pixels(40)).permute(0, 3, 1, 2)
    angles = torch.empty(40).uniform_(-15, 15, generator=torch.Generator().manual_seed(0))
    rotated = augment.rotate(images, angles)
    for image, angle, out in zip(images, angles.tolist(), rotated):
        pil = F1.rotate(Image.fromarray(image.permute(1, 2, 0).numpy()), angle,
                        interpolation=F1.InterpolationMode.NEAREST, fill=0)
        agree = (out.permute(1, 2, 0).numpy() == np.asarray(pil)).all(-1).mean()
        assert agree >= 0.99, (angle, agree)  # nearest-neighbour ties at a few boundary pixels
    edges = torch.tensor([0.0, -0.0, 15.0, -15.0, 1.0, -1.0, 10.0, -7.5, 1e-6, -1e-6, 14.999999, -14.999999])
    angles = torch.cat([edges, torch.empty(300).uniform_(-15, 15, generator=torch.Generator().manual_seed(1))])
    images = torch.from_numpy(np.concatenate([_pixels(len(angles) - 64, seed=1), _demo_images(64).permute(0, 2, 3, 1)]))
    images = images.permute(0, 3, 1, 2)
    rotated = augment.rotate(images, angles)
    for k, (image, angle) in enumerate(zip(images, angles.tolist())):
        expected = F2.rotate(image, angle, interpolation=InterpolationMode.NEAREST, fill=0.0)
        assert torch.equal(rotated[k], expected), (k, angle)


def test_draw_distributions_match_torchvisions_transforms():
    """Offsets uniform over 0..8 each, flips fair, angles U(-15, 15), read from the outputs of both paths."""
    n = 2700
    image = _coordinate_image()
    augment = BatchAugment("ldam_cifar", 32)
    batch = _unnormalize(augment(torch.from_numpy(image).expand(n, 32, 32, 3), torch.Generator().manual_seed(3)))
    ours = np.array([_read_draw(x) for x in batch], dtype=float)
    torch.manual_seed(3)
    pil_tf = create_train_transform("ldam_cifar")
    theirs = np.array([_read_draw(_unnormalize(pil_tf(Image.fromarray(image)))) for _ in range(n)], dtype=float)
    for draws in (ours, theirs):
        for column in (0, 1):
            freq = np.bincount(draws[:, column].astype(int), minlength=9) / n
            assert freq.shape == (9,) and np.abs(freq - 1 / 9).max() < 0.03, freq
        assert abs(draws[:, 2].mean() - 0.5) < 0.04
        assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.06  # rows and columns drawn independently
    angles = BatchAugment("ride_cifar", 32).draw(4000, torch.Generator().manual_seed(0))["angle"]
    assert -15 <= angles.min() < -14.9 and 14.9 < angles.max() <= 15
    assert abs(angles.mean()) < 0.5 and abs(angles.abs().mean() - 7.5) < 0.3


@pytest.mark.parametrize("recipe", sorted(r for r, spec in BATCH_RECIPES.items() if not spec.autoaugment))
def test_per_channel_statistics_on_real_images_match_the_pil_path(recipe):  # nclpp_cifar: its own test below
    data = build_dataset("demo")
    images = data.images[:200]
    torch.manual_seed(0)
    pil_tf = create_train_transform(recipe)
    theirs = torch.stack([pil_tf(Image.fromarray(x)) for x in np.concatenate([images] * 4)])
    ours = BatchAugment(recipe, 32)(torch.from_numpy(np.concatenate([images] * 4)), torch.Generator().manual_seed(0))
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    for stat in (lambda x: x.mean(dim=(0, 2, 3)), lambda x: x.std(dim=(0, 2, 3))):
        assert torch.allclose(stat(ours), stat(theirs), atol=0.03), (stat(ours), stat(theirs))
    black = ((_unnormalize(ours) == 0).all(1)).float().mean(), ((_unnormalize(theirs) == 0).all(1)).float().mean()
    assert abs(black[0] - black[1]) < 0.01, black  # the share of padding / fill pixels


def test_same_seed_same_batch_and_bad_input():
    augment = BatchAugment("ride_cifar", 32)
    images = torch.from_numpy(_pixels(16))
    a, b = (augment(images, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(images, torch.Generator().manual_seed(6)))
    with pytest.raises(UserInputError, match="no batched form of the 'inat'"):
        BatchAugment("inat", 32)
    with pytest.raises(UserInputError, match="uint8"):
        augment(images.float(), torch.Generator())


def _demo_images(n=64):
    return torch.from_numpy(build_dataset("demo").images[:n]).permute(0, 3, 1, 2).contiguous()


def _space_ops():
    """Every (op, magnitude) the CIFAR-10 policy can apply: each op of each sub-policy, both signs."""
    augment = BatchAutoAugment(32)
    ops = set()
    for policy in augment.policies:
        for op_name, _, magnitude_id in policy:
            ops.update((op_name, augment.magnitude(op_name, magnitude_id, sign)) for sign in (0, 1))
    return sorted(ops)


def test_every_autoaugment_op_agrees_with_the_pil_path():
    """Each op at each magnitude the policy uses, on real images: torchvision's tensor op (whose
    pixels the batched path gives, tests below) against the same op on PIL images (what the worker
    path runs)."""
    images = _demo_images(32)
    ops = _space_ops()
    assert len(ops) == 53 and {op for op, _ in ops} == {
        "Invert", "Contrast", "Rotate", "TranslateX", "TranslateY", "Sharpness", "ShearY", "AutoContrast",
        "Equalize", "Posterize", "Color", "Brightness", "Solarize"}
    for op_name, magnitude in ops:
        batched = _apply_op(images, op_name, magnitude, InterpolationMode.NEAREST, None)
        pil = torch.stack([F1.pil_to_tensor(_apply_op(F1.to_pil_image(x), op_name, magnitude,
                                                      InterpolationMode.NEAREST, None)) for x in images])
        diff = (batched.int() - pil.int()).abs()
        assert diff.float().mean() < 1.0 and (diff <= 2).float().mean() > 0.97, (op_name, magnitude)
        if op_name in ("Invert", "Posterize", "Solarize", "TranslateX", "TranslateY", "Brightness"):
            assert torch.equal(batched, pil), (op_name, magnitude)


def test_each_sample_gets_its_own_sub_policy_in_order():
    """The batched application equals running every sample's own two ops one image at a time, in
    order, as T.AutoAugment does, and an op whose draw exceeds its probability is skipped."""
    augment = BatchAutoAugment(32)
    images = _demo_images(100)
    for seed in (1, 2, 3):
        params = augment.draw(100, torch.Generator().manual_seed(seed))
        batched = augment(images, params)
        for k, image in enumerate(images):
            expected = image
            for slot, (op_name, p, magnitude_id) in enumerate(augment.policies[int(params["policy"][k])]):
                if params["probs"][k, slot] <= p:
                    magnitude = augment.magnitude(op_name, magnitude_id, int(params["signs"][k, slot]))
                    expected = _apply_op(expected, op_name, magnitude, InterpolationMode.NEAREST, None)
            assert torch.equal(batched[k], expected), (seed, k)
    # order matters: sub-policy 1 is Rotate then TranslateX; swapping them changes the pixels
    params = dict(policy=torch.full((4,), 1), probs=torch.zeros(4, 2), signs=torch.ones(4, 2, dtype=torch.long))
    out = augment(images[:4], params)
    rotate, translate = augment.magnitude("Rotate", 2, 1), augment.magnitude("TranslateX", 9, 1)
    assert rotate == pytest.approx(30 * 2 / 9) and translate == pytest.approx(150 / 331 * 32)
    in_order = _apply_op(_apply_op(images[:4], "Rotate", rotate, InterpolationMode.NEAREST, None),
                         "TranslateX", translate, InterpolationMode.NEAREST, None)
    swapped = _apply_op(_apply_op(images[:4], "TranslateX", translate, InterpolationMode.NEAREST, None),
                        "Rotate", rotate, InterpolationMode.NEAREST, None)
    assert torch.equal(out, in_order) and not torch.equal(out, swapped)
    skipped = augment(images[:4], dict(params, probs=torch.ones(4, 2)))  # 1 > every probability of policy 1
    assert torch.equal(skipped, images[:4])


def test_autoaugment_draws_follow_torchvisions_get_params():
    """Sub-policy uniform over the 25, probabilities U(0, 1), fair signs, the CIFAR-10 policy and
    magnitudes of torchvision's class; applied-op frequencies match the PIL transform's."""
    augment = BatchAutoAugment(32)
    reference = AutoAugment(AutoAugmentPolicy.CIFAR10)
    assert augment.policies == reference.policies
    space = reference._augmentation_space(10, (32, 32))
    assert all(torch.equal(augment.space[k][0], v[0]) and augment.space[k][1] == v[1] for k, v in space.items())
    n = 10000
    params = augment.draw(n, torch.Generator().manual_seed(0))
    freq = torch.bincount(params["policy"], minlength=25) / n
    assert freq.shape == (25,) and (freq - 1 / 25).abs().max() < 0.012
    assert abs(params["probs"].mean() - 0.5) < 0.01 and abs((params["probs"] < 0.3).float().mean() - 0.3) < 0.015
    assert abs(params["signs"].float().mean() - 0.5) < 0.01
    # share of samples left unchanged by AutoAugment: both paths, 400 draws each, vs the exact value
    unchanged = sum((1 - p0) * (1 - p1) for (_, p0, _), (_, p1, _) in augment.policies) / 25
    image = _demo_images(1)[0]
    ours = augment(image.expand(400, -1, -1, -1), augment.draw(400, torch.Generator().manual_seed(2)))
    ours_same = (ours == image).flatten(1).all(1).float().mean()
    torch.manual_seed(2)
    pil_image = F1.to_pil_image(image)
    theirs_same = np.mean([np.array_equal(np.asarray(reference(pil_image)), np.asarray(pil_image)) for _ in range(400)])
    for share in (float(ours_same), float(theirs_same)):
        assert abs(share - unchanged) < 0.06, (share, unchanged)


def test_cutout_is_the_pil_paths_square():
    """The batched hole equals our Cutout module's for the same centre (clipped at the border), and
    its centres are uniform over the image."""
    augment = BatchAugment("nclpp_cifar", 32)
    assert augment.cutout_length == 16
    images = torch.full((6, 3, 32, 32), 200, dtype=torch.uint8)
    centres = torch.tensor([[0, 0], [16, 16], [31, 5], [7, 31], [8, 8], [23, 24]])
    out = augment.cutout(images, centres)
    for k, (y, x) in enumerate(centres.tolist()):
        expected = torch.full((3, 32, 32), 200, dtype=torch.uint8)
        expected[:, max(y - 8, 0):min(y + 8, 32), max(x - 8, 0):min(x + 8, 32)] = 0
        assert torch.equal(out[k], expected), (y, x)
    # the module draws its centre from torch's global generator: read it off the hole it makes
    torch.manual_seed(4)
    module_centres = [(int(torch.randint(32, (1,))), int(torch.randint(32, (1,)))) for _ in range(3)]
    torch.manual_seed(4)
    for (y, x) in module_centres:
        hole = Cutout(16)(torch.ones(3, 32, 32)) == 0
        assert torch.equal(hole, augment.cutout(torch.ones(1, 3, 32, 32, dtype=torch.uint8),
                                                torch.tensor([[y, x]]))[0] == 0)
    drawn = augment.draw(9000, torch.Generator().manual_seed(0))["cutout"]
    assert drawn.shape == (9000, 2) and drawn.min() == 0 and drawn.max() == 31
    freq = torch.bincount(drawn.flatten(), minlength=32) / drawn.numel()
    assert (freq - 1 / 32).abs().max() < 0.006


@pytest.mark.slow
def test_nclpp_recipe_on_real_images_matches_the_pil_path_in_its_statistics():
    """The whole nclpp_cifar recipe, batched vs PIL, on 4,000 draws of real images: per-channel mean and
    std, the share of black (padding, fill, hole) pixels and the per-image brightness spread (seed to
    seed, the channel means of either path move by up to 0.04 at 2,000 draws)."""
    images = build_dataset("demo").images[:1000]
    many = np.concatenate([images] * 4)
    torch.manual_seed(0)
    pil_tf = create_train_transform("nclpp_cifar")
    theirs = torch.stack([pil_tf(Image.fromarray(x)) for x in many])
    ours = BatchAugment("nclpp_cifar", 32)(torch.from_numpy(many), torch.Generator().manual_seed(0))
    assert ours.shape == theirs.shape == (4000, 3, 32, 32)
    for stat in (lambda x: x.mean(dim=(0, 2, 3)), lambda x: x.std(dim=(0, 2, 3)),
                 lambda x: x.mean(dim=(1, 2, 3)).std()):
        assert torch.allclose(stat(ours), stat(theirs), atol=0.05), (stat(ours), stat(theirs))
    black = [(_unnormalize(x) == 0).all(1).float().mean() for x in (ours, theirs)]
    assert 0.2 < black[0] < 0.35 and abs(black[0] - black[1]) < 0.015, black  # a 16 px hole is 1/4 of the image


# --- the batched ops against torchvision's, and against the per-group implementation they replace ---

def _edge_images():
    """Images where the colour ops take their special branches: flat images and channels (AutoContrast's
    max == min, Equalize's step 0), nearly flat ones (step 0 with two levels), the extremes 0 and 255
    (Solarize at 255 and 0, Posterize), stripes and gradients (Sharpness's blur, geometric edges)."""
    rng = np.random.default_rng(7)
    images = np.zeros((12, 32, 32, 3), np.uint8)
    images[0] = 77  # flat
    images[1] = rng.integers(0, 256, (32, 32, 3))
    images[1, ..., 1] = 200  # one flat channel
    images[2] = 200
    images[2, :10, :10] = 50  # 100 pixels off the top level: equalize's step is 0
    images[3] = 200
    images[3, :20, :20] = 50  # 400 off: step 1
    images[4, ::2] = 255  # stripes of 0 and 255
    images[5] = 255
    images[6] = np.arange(32, dtype=np.uint8)[None, :, None] * 8  # horizontal gradient
    images[7] = np.arange(32, dtype=np.uint8)[:, None, None] * 8 + 3  # vertical gradient
    images[8] = rng.integers(250, 256, (32, 32, 3))  # near the top
    images[9] = rng.integers(0, 3, (32, 32, 3))  # near the bottom
    images[10] = np.arange(1024).reshape(32, 32, 1) % 256  # every level 4 times per channel
    images[11] = rng.integers(0, 256, (32, 32, 3))
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _every_op_at_every_magnitude():
    """(op, magnitude) for every op of torchvision's augmentation space, every bin, both signs."""
    augment = BatchAutoAugment(32)
    ops = [("Identity", 0.0)]
    for op_name, (magnitudes, signed) in augment.space.items():
        values = sorted({float(v) for v in magnitudes.flatten()})
        ops += [(op_name, sign * v) for v in values for sign in ((1, -1) if signed and v else (1,))]
    return ops


def test_every_op_at_every_magnitude_and_sign_gives_torchvisions_pixels():
    """All 14 AutoAugment ops (ShearX too, which the CIFAR-10 policy does not use) at every bin and
    sign, each sample of a batch with its own op: pixel for pixel torchvision's ``_apply_op``."""
    augment = BatchAutoAugment(32)
    ops = _every_op_at_every_magnitude()
    assert {op for op, _ in ops} == set(augment.space) | {"Identity"} and len(augment.space) == 14
    images = torch.cat([_demo_images(52), _edge_images()])  # 64
    for op_name in dict(ops):  # one batch per op: its every magnitude on all 64 images
        magnitudes = [m for name, m in ops if name == op_name]
        rows = torch.tensor([augment.op_row(op_name, m) for m in magnitudes]).repeat_interleave(len(images), 0)
        batched = augment.apply(images.repeat(len(magnitudes), 1, 1, 1), rows).view(len(magnitudes), *images.shape)
        for magnitude, out in zip(magnitudes, batched):
            expected = _apply_op(images, op_name, magnitude, InterpolationMode.NEAREST, None)
            assert torch.equal(out, expected), (op_name, magnitude, int((out != expected).sum()))
    # one batch mixing every op: each sample still gets its own
    order = torch.randperm(len(ops) * 4, generator=torch.Generator().manual_seed(0)) % len(ops)
    mixed = torch.cat([images] * (len(order) // len(images) + 1))[:len(order)]
    rows = torch.tensor([augment.op_row(*ops[i]) for i in order.tolist()])
    out = augment.apply(mixed, rows)
    for k, i in enumerate(order.tolist()):
        expected = _apply_op(mixed[k:k + 1], *ops[i], InterpolationMode.NEAREST, None)[0]
        assert torch.equal(out[k], expected), (k, ops[i])


def _grouped_autoaugment(augment, images, params):
    """The per-group implementation the batched ops replaced: the samples that drew the same op and
    magnitude through torchvision's ``_apply_op`` together, slot by slot."""
    out = images.clone()
    policy, probs, signs = (params[k].tolist() for k in ("policy", "probs", "signs"))
    for slot in (0, 1):
        groups = {}
        for row, (chosen, prob, sign) in enumerate(zip(policy, probs, signs)):
            op_name, p, magnitude_id = augment.policies[chosen][slot]
            if prob[slot] <= p:
                key = (op_name, augment.magnitude(op_name, magnitude_id, sign[slot]))
                groups.setdefault(key, []).append(row)
        for (op_name, magnitude), rows in groups.items():
            index = torch.tensor(rows)
            out[index] = _apply_op(out[index], op_name, magnitude, InterpolationMode.NEAREST, None)
    return out


def _per_image_recipe(augment, images, generator):
    """``BatchAugment`` as it was: the same draws and crop, torchvision's rotation one image at a time,
    the per-group AutoAugment, the Cutout and torchvision's normalisation."""
    params = augment.draw(images.shape[0], generator)
    out = augment.crop_flip(images, params)
    if augment.degrees:
        out = torch.stack([F2.rotate(image, angle, interpolation=InterpolationMode.NEAREST, fill=0.0)
                           for image, angle in zip(out, params["angle"].tolist())])
    if augment.autoaugment is not None:
        out = _grouped_autoaugment(augment.autoaugment, out, params)
    if augment.cutout_length:
        out = augment.cutout(out, params["cutout"])
    return F2.normalize(out.float().div_(255), list(augment.mean), list(augment.std))


@pytest.mark.parametrize("recipe", sorted(BATCH_RECIPES))
def test_recipes_give_the_per_image_implementations_pixels(recipe):
    """Whole batches (real and random images, 4 seeds): the same tensors, bit for bit, as the
    per-group / per-image implementation for the same generator seed."""
    augment = BatchAugment(recipe, 32)
    images = torch.from_numpy(np.concatenate([build_dataset("demo").images[:192], _pixels(48, seed=3),
                                              _edge_images().permute(0, 2, 3, 1).numpy()]))
    for seed in range(4):
        ours = augment(images, torch.Generator().manual_seed(seed))
        theirs = _per_image_recipe(augment, images, torch.Generator().manual_seed(seed))
        assert torch.equal(ours, theirs), (seed, int((ours != theirs).sum()))


class _CountOps(TorchDispatchMode):
    """Counts the aten ops run, and those that bring a CPU tensor to another device."""

    def __init__(self):
        super().__init__()
        self.ops, self.transfers = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        sources = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        if isinstance(out, torch.Tensor) and out.device.type != "cpu" and any(a.is_cpu for a in sources):
            self.transfers += 1
        return out


@pytest.mark.parametrize("recipe", sorted(BATCH_RECIPES))
def test_recipes_run_on_the_meta_device(recipe):
    """Nothing is read back from the device: any ``.item()``, ``.tolist()``, ``nonzero`` or boolean
    mask on a device tensor would fail on ``meta`` tensors, which have no values."""
    out = BatchAugment(recipe, 32)(torch.empty(256, 32, 32, 3, dtype=torch.uint8, device="meta"),
                                   torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (256, 3, 32, 32) and out.dtype == torch.float32


# aten ops per batch, about 1.5 x what the batched recipes run (40, 86 and 357 when written; the
# per-group AutoAugment ran 3,400 to 4,700 for 256 images, the per-image rotation 8,738)
OP_BUDGET = {"ldam_cifar": 60, "ride_cifar": 130, "nclpp_cifar": 540}


@pytest.mark.parametrize("recipe", sorted(BATCH_RECIPES))
def test_op_count_is_fixed_whatever_the_batch_and_within_budget(recipe):
    """A fixed list of ops per batch: the same count for 64 and 256 images and for any draws, under
    the budget, with one copy of the draws to the device."""
    augment = BatchAugment(recipe, 32)
    augment(torch.empty(8, 32, 32, 3, dtype=torch.uint8, device="meta"), torch.Generator())  # per-device setup
    counts = set()
    for batch, seed in ((64, 0), (256, 0), (256, 1), (256, 2)):
        images = torch.empty(batch, 32, 32, 3, dtype=torch.uint8, device="meta")
        with _CountOps() as count:
            augment(images, torch.Generator().manual_seed(seed))
        counts.add(count.ops)
        assert count.transfers == 1, count.transfers
    assert len(counts) == 1 and counts.pop() < OP_BUDGET[recipe], counts

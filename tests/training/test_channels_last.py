"""The CPU speed path (fp32, channels-last) computes the training step of the plain fp32 path.

Channels-last changes the memory layout and the kernels (oneDNN), not the arithmetic's precision:
one real RIDE step in either layout gives the same loss, and gradients as close to the float64
gradient as NCHW's (measured: 0.17 % NCHW, 0.53 % channels-last; 22 % under bf16 autocast, which
is why the CPU recipes leave it off: on a CPU without AVX512-BF16 it also halves the speed).
"""
import timm_longtail  # noqa: F401  (first: the torchvision shim, then timm)
import timm
import torch
from timm_longtail.losses import build_loss

COUNTS = [500, 300, 200, 120, 80, 50, 30, 20, 10, 5]


def _step(channels_last: bool, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10).train().to(dtype)
    criterion = build_loss("ride", COUNTS, base_loss="ldam").to(dtype)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, 32, 32, generator=generator).to(dtype)
    target = torch.randint(0, 10, (16,), generator=generator)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    loss = criterion(model.forward_train(images)["logits"], target)
    loss.backward()
    grads = torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None])
    return loss.double(), grads


def test_channels_last_step_matches_the_float64_step():
    exact_loss, exact = _step(False, torch.float64)
    for channels_last in (False, True):
        loss, grads = _step(channels_last)
        torch.testing.assert_close(loss, exact_loss, rtol=1e-5, atol=0)
        relative = ((grads - exact).norm() / exact.norm()).item()
        assert relative < 0.015, (channels_last, relative)

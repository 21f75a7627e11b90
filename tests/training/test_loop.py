"""Pieces of the epoch loop."""
import os
import signal

import torch

from timm_longtail.training.distributed import DistContext
from timm_longtail.training.loop import StopFlag, copy_major


def test_copy_major_rows_are_copy_then_image():
    batch, copies = 3, 2
    images = torch.arange(batch * copies, dtype=torch.float32).view(batch, copies, 1, 1, 1)  # value = b*T + t
    target = torch.tensor([7, 8, 9])
    stacked, repeated = copy_major(images, target)
    assert stacked.shape == (batch * copies, 1, 1, 1)
    for t in range(copies):
        for b in range(batch):
            assert stacked[t * batch + b].item() == b * copies + t
    assert repeated.tolist() == [7, 8, 9, 7, 8, 9]
    plain = torch.zeros(4, 3, 8, 8)
    assert copy_major(plain, target)[0] is plain


def test_first_signal_sets_the_flag_instead_of_killing():
    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signum == signal.SIGTERM
        assert flag.agreed(DistContext(device=torch.device("cpu")))
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGTERM) != flag._handle

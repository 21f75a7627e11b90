#!/usr/bin/env python3
"""Training throughput (images/s; views/s for multi-copy NCL++) of each ResNet-32 zoo variant per precision/layout setting, as JSON.

    python scripts/benchmark_train.py --out results/benchmark_train_cpu.json

One training step is what train.py does per batch, without the data pipeline: forward through all
experts, the method's loss, backward, SGD (Nesterov) step. Synthetic inputs; the first steps warm up
(oneDNN picks kernels) and are not timed. Settings: fp32 NCHW, fp32 channels-last, bf16 autocast
(the device's autocast) channels-last. Run it on a quiet machine: every core counts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

import timm_longtail  # noqa: F401  (registers the models)
import timm
from timm_longtail.losses import build_loss

VARIANTS = {  # name: (model, create kwargs, loss method, loss options, copies)
    "ldam_drw_resnet32": ("ride_resnet32_2e", dict(num_experts=1, reduce_dimension=False), "ldam_drw", {}, 1),
    "ride_resnet32_2e": ("ride_resnet32_2e", {}, "ride", dict(base_loss="ldam"), 1),
    "ride_resnet32_3e": ("ride_resnet32_3e", {}, "ride", dict(base_loss="ldam"), 1),
    "ride_resnet32_4e": ("ride_resnet32_4e", {}, "ride", dict(base_loss="ldam"), 1),
    "ride_resnet32_6e": ("ride_resnet32_6e", {}, "ride", dict(base_loss="ldam"), 1),
    "nclpp_resnet32_t2": ("nclpp_resnet32", {}, "nclpp", {}, 2),
}
SETTINGS = {"fp32": (False, False), "fp32_channels_last": (True, False), "bf16_channels_last": (True, True)}


def bench(variant: str, setting: str, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """Training images per second (an NCL++ image is ``copies`` augmented rows)."""
    model_name, kwargs, method, options, copies = VARIANTS[variant]
    channels_last, bf16 = SETTINGS[setting]
    torch.manual_seed(0)
    counts = [int(500 * 0.01 ** (i / 9)) for i in range(10)]  # CIFAR-10-LT at IF 100
    model = timm.create_model(model_name, num_classes=10, **kwargs).to(device).train()
    criterion = build_loss(method, counts, num_experts=model.num_experts, num_copies=copies, **options).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    rows = batch * copies
    images = torch.randn(rows, 3, 32, 32, device=device)
    target = torch.randint(0, 10, (batch,), device=device).repeat(copies)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.forward_train(images)["logits"]
        loss = criterion(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results: List[Dict[str, Any]] = []
    for variant in args.variants:
        for setting in args.settings:
            rate = bench(variant, setting, args.batch_size, args.steps, args.warmup, device)
            copies = VARIANTS[variant][4]
            results.append(dict(variant=variant, setting=setting, copies=copies, train_images_per_sec=round(rate, 1),
                                train_views_per_sec=round(rate * copies, 1)))
            print(f"{variant:<20} {setting:<20} {rate:8.1f} img/s", file=sys.stderr, flush=True)
    cpu_flags = ""
    if Path("/proc/cpuinfo").is_file():
        flags = next((l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")), "")
        cpu_flags = " ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags)
    payload = dict(
        device=str(device), torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        processor=platform.processor() or platform.machine(), cpu_flags=cpu_flags,
        gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, results=results)
    text = json.dumps(payload, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

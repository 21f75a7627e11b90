#!/usr/bin/env python3
"""Training throughput (images/s; views/s for multi-copy NCL++) of each ResNet-32 zoo variant per precision/layout setting, as JSON.

    python scripts/benchmark_train.py --out results/benchmark_train_cpu.json
    python scripts/benchmark_train.py --pipelines workers device --data-dir ../shared/data/cifar10 --out F

Pipelines (``--pipelines``): whole train.py runs of each variant's zoo recipe, two epochs cut to
``--pipeline-steps`` steps, the second epoch's rate reported (the first pays for start-up):
``workers`` is the old input path (PIL transforms in loader worker processes), ``device`` the new one
(``--device-augment``: the uint8 set on the training device, augmented there in batches, NCL++'s
copies included). Both run today's training step (no host read per step).

One training step is what train.py does per batch, without the data pipeline: forward through all
experts, the method's loss, backward, SGD (Nesterov) step. Synthetic inputs; the first steps warm up
(oneDNN picks kernels) and are not timed. Settings: fp32 NCHW, fp32 channels-last, bf16 autocast
(the device's autocast) channels-last. Run it on a quiet machine: every core counts.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
import yaml

import timm_longtail  # noqa: F401  (registers the models)
import timm
from timm_longtail._machine import describe_machine
from timm_longtail.files import atomic_write_text
from timm_longtail.losses import build_loss

VARIANTS = {  # name: (model, create kwargs, loss method, loss options, copies)
    "ldam_drw_resnet32": ("ride_resnet32_2e", dict(num_experts=1, reduce_dimension=False), "ldam_drw", {}, 1),
    "ride_resnet32_2e": ("ride_resnet32_2e", {}, "ride", dict(base_loss="ldam"), 1),
    "ride_resnet32_3e": ("ride_resnet32_3e", {}, "ride", dict(base_loss="ldam"), 1),
    "ride_resnet32_4e": ("ride_resnet32_4e", {}, "ride", dict(base_loss="ldam"), 1),
    "ride_resnet32_6e": ("ride_resnet32_6e", {}, "ride", dict(base_loss="ldam"), 1),
    "nclpp_resnet32_t2": ("nclpp_resnet32", {}, "nclpp", {}, 2),
}
ROOT = Path(__file__).resolve().parents[1]
RECIPES = {  # variant: (zoo recipe config, its train.py flags)
    "ldam_drw_resnet32": ("configs/ldam_drw_r32_cifar10lt.yaml", []),
    "ride_resnet32_2e": ("configs/ride_r32_3e_cifar10lt.yaml", ["--model", "ride_resnet32_2e"]),
    "ride_resnet32_3e": ("configs/ride_r32_3e_cifar10lt.yaml", []),
    "ride_resnet32_4e": ("configs/ride_r32_3e_cifar10lt.yaml", ["--model", "ride_resnet32_4e"]),
    "ride_resnet32_6e": ("configs/ride_r32_3e_cifar10lt.yaml", ["--model", "ride_resnet32_6e"]),
    "nclpp_resnet32_t2": ("configs/nclpp_r32_cifar10lt.yaml", ["--num-copies", "2"]),
}
PIPELINES = {"workers": [], "device": ["--device-augment"]}
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


def bench_pipeline(variant: str, pipeline: str, steps: int, device: str, data_dir: str | None,
                   dataset: str | None, workers: int, python: str = sys.executable) -> Dict[str, Any]:
    """One train.py run of the variant's recipe on ``pipeline``: the second epoch's images/s and step time.
    ``dataset`` replaces the recipe's (its imbalance factor goes with it: e.g. the demo set's tail is fixed)."""
    config, flags = RECIPES[variant]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        config_path = ROOT / config
        if dataset:
            recipe = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            recipe.pop("imbalance_factor", None)
            config_path = Path(tmp) / "recipe.yaml"
            config_path.write_text(yaml.safe_dump({**recipe, "dataset": dataset}), encoding="utf-8")
        data = ["--data-dir", data_dir] if data_dir else []
        command = [python, str(ROOT / "train.py"), "-c", str(config_path), *flags, *data, "--device", device,
                   "--workers", str(workers), "--epochs", "2", "--max-steps-per-epoch", str(steps),
                   "--log-interval", str(steps), "--no-final-eval", "--output", tmp, "--experiment", "bench",
                   *PIPELINES[pipeline]]
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(f"{variant} / {pipeline}: train.py exited {proc.returncode}: "
                               f"{lines[-1] if lines else ''}")
        with open(Path(tmp) / "bench" / "summary.csv", newline="") as handle:
            row = list(csv.DictReader(handle))[-1]
    rate = float(row["train_images_per_sec"])
    return dict(variant=variant, pipeline=pipeline, steps=steps, train_images_per_sec=round(rate, 1),
                step_time_ms=round(float(row["train_epoch_time_s"]) / steps * 1000, 1))


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS),
                        help="compute-only step settings (none: only --pipelines)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--pipelines", nargs="*", default=[], choices=list(PIPELINES),
                        help="also time whole train.py runs on these input paths (old: workers, new: device)")
    parser.add_argument("--pipeline-steps", type=int, default=40, help="steps of each of the two timed epochs")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 parquet folder for --pipelines")
    parser.add_argument("--dataset", default=None, help="train.py --dataset for --pipelines (e.g. demo: no data)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the workers pipeline")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results: List[Dict[str, Any]] = []
    pipelines: List[Dict[str, Any]] = []
    if args.pipelines and not (args.data_dir or args.dataset):
        parser.error("--pipelines needs --data-dir (CIFAR-10) or --dataset demo")

    def write() -> str:  # after every row: a run stopped at a time limit keeps what it measured
        payload = dict(device=str(device), **describe_machine(device), batch_size=args.batch_size, steps=args.steps,
                       warmup=args.warmup, results=results, pipelines=pipelines)
        text = json.dumps(payload, indent=2)
        if args.out:
            atomic_write_text(args.out, text + "\n")
        return text

    for variant in args.variants:
        for pipeline in args.pipelines:
            try:
                row = bench_pipeline(variant, pipeline, args.pipeline_steps, args.device, args.data_dir, args.dataset,
                                     args.workers)
            except RuntimeError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            pipelines.append(row)
            write()
            print(f"{variant:<20} {pipeline:<20} {row['train_images_per_sec']:8.1f} img/s "
                  f"{row['step_time_ms']:8.1f} ms/step", file=sys.stderr, flush=True)
        for setting in args.settings:
            rate = bench(variant, setting, args.batch_size, args.steps, args.warmup, device)
            copies = VARIANTS[variant][4]
            results.append(dict(variant=variant, setting=setting, copies=copies, train_images_per_sec=round(rate, 1),
                                train_views_per_sec=round(rate * copies, 1)))
            write()
            print(f"{variant:<20} {setting:<20} {rate:8.1f} img/s", file=sys.stderr, flush=True)
    print(write())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DeepLabV2 training speed: iterations/s and peak memory at 321x321 crops, batch 10.

    python benchmarks/train_seg.py [--iters 5] [--batch-size 10] [--accumulate 2] [--crop-size 321]
                                   [--backbone resnet101] [--device auto] [--precision auto] [--no-msc]

Random inputs and labels at real model size (random weights, frozen BN as in DeepLabV2, the
trainer's channels-last layout), one optimiser step per iteration with the configured
accumulation; the first iteration is a warm-up. The 20k-iteration VOC schedule takes
20000 / (it/s) seconds. Asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from pseudolabel.core.devices import autocast_dtype, resolve_device
from pseudolabel.models.deeplab import DeepLabV2
from pseudolabel.train.trainer import TRAINING_LAYOUT, MscNetwork, TrainConfig, make_optimizer, training_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--crop-size", type=int, default=321)
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--no-msc", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = autocast_dtype(args.precision, device)
    config = TrainConfig(Path("."), Path("."), iterations=20_000, msc=not args.no_msc, backbone=args.backbone)
    torch.manual_seed(0)
    model = DeepLabV2(21, args.backbone, freeze_bn=True).to(device, memory_format=TRAINING_LAYOUT)
    network = MscNetwork(model)
    optimizer, scheduler = make_optimizer(model, config)
    micro = args.batch_size // args.accumulate
    images = torch.randn(micro, 3, args.crop_size, args.crop_size, device=device).contiguous(
        memory_format=TRAINING_LAYOUT
    )
    labels = torch.randint(0, 21, (micro, args.crop_size, args.crop_size), device=device)
    times = []
    for iteration in range(args.iters + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            if iteration == 1:
                torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(args.accumulate):
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = training_loss(network, images, labels, config) / args.accumulate
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if iteration:
            times.append(time.perf_counter() - start)
    rate = len(times) / sum(times)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
    print(
        f"{args.backbone} DeepLabV2 on {device} ({precision}), batch {args.batch_size} = {micro} x {args.accumulate}, "
        f"{args.crop_size}px crops, MSC {'on' if not args.no_msc else 'off'}: {rate:.3f} it/s, "
        f"peak memory {memory:.0f} MB; 20k iterations would take {20_000 / rate / 3600:.1f} h"
    )


if __name__ == "__main__":
    main()

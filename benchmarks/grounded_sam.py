"""Grounded-SAM speed per stage at real model sizes (random weights).

    python benchmarks/grounded_sam.py [--images 4] [--detector swint] [--sam vit_h] [--boxes 8]
                                      [--device auto] [--precision auto]

Per VOC-size image (500x375, 3 classes in the caption): the detector's forward (``--detector``:
Grounding DINO or MM-Grounding-DINO at 800 on the short side, OWLv2 at 960 / 1008 px square),
SAM image encoder (one embedding per image), SAM decoder for ``--boxes`` box prompts in one
batched call, and the merge into ScoreMaps. Random weights give random detections, so the box
prompts are fixed random boxes (VOC train has 2-3 objects per image; 8 is generous). Prints
seconds per stage, images/s and peak memory (process RSS on CPU, max allocated on CUDA; peak after
each stage).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pseudolabel.core.devices import autocast_dtype, resolve_device
from pseudolabel.labelers.detection import detect
from pseudolabel.labelers.options import DetectorOptions
from pseudolabel.models.grounding import build_detector
from pseudolabel.models.sam import SamPrompter, build_sam, merge_by_confidence

HEIGHT, WIDTH = 375, 500
NAMES = ["cat", "dining table", "person"]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_boxes(count: int, generator: torch.Generator) -> torch.Tensor:
    """[count, 4] x0, y0, x1, y1 boxes inside the image, at least 40 px a side."""
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([WIDTH - 60, HEIGHT - 60])
    size = 40 + torch.rand(count, 2, generator=generator) * 200
    far = torch.minimum(corner + size, torch.tensor([WIDTH, HEIGHT]))
    return torch.cat([corner, far], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--detector", default="swint")
    parser.add_argument("--sam", default="vit_h")
    parser.add_argument("--boxes", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = autocast_dtype(args.precision, device)
    torch.manual_seed(0)
    detector = build_detector(args.detector, "random", device, dtype)
    sam = SamPrompter(build_sam(args.sam, "random", device), autocast_dtype=dtype)
    options = DetectorOptions()
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    stages = {"detector": 0.0, "sam encoder": 0.0, "sam decoder": 0.0, "merge": 0.0}
    peaks = {}
    for index in range(args.images + 1):  # the first image warms up
        rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        boxes = random_boxes(args.boxes, generator).to(device)
        start = sync()
        detect(detector, rgb, NAMES, options)
        detected = sync()
        peaks.setdefault("detector", peak_memory_mb(device))
        sam.set_image(rgb)
        encoded = sync()
        peaks.setdefault("sam encoder", peak_memory_mb(device))
        masks, ious = sam.predict_boxes(boxes)
        decoded = sync()
        peaks.setdefault("sam decoder", peak_memory_mb(device))
        channels = torch.arange(len(masks), device=masks.device) % len(NAMES) + 1
        merge_by_confidence(masks, ious, channels, len(NAMES) + 1).cpu()
        merged = sync()
        peaks.setdefault("merge", peak_memory_mb(device))
        if index:
            for name, seconds in zip(
                stages, (detected - start, encoded - detected, decoded - encoded, merged - decoded), strict=True
            ):
                stages[name] += seconds
    total = sum(stages.values()) / args.images
    precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
    print(
        f"Grounded-SAM ({args.detector} + SAM {args.sam}, random weights) on {device}, {precision}, "
        f"{WIDTH}x{HEIGHT}, {len(NAMES)} classes, {args.boxes} boxes:"
    )
    for name, seconds in stages.items():
        print(f"  {name:12s} {seconds / args.images:.3f} s/image, peak memory so far {peaks[name]:.0f} MB")
    print(f"  total        {total:.3f} s/image = {1 / total:.2f} images/s")


if __name__ == "__main__":
    main()

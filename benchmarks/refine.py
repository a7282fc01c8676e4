"""Refinement speed: DenseCRF per VOC-size image, and SAM point-grid refinement at real size.

    python benchmarks/refine.py [--images 8] [--sam vit_b] [--grid 16] [--device auto] [--skip-sam]

DenseCRF (10 iterations, 500x375, 3 classes) is timed in one process and over all cores.
SAM (random weights at real size, one image embedding per image, 16x16 candidate points
batched 64 at a time) is timed per stage: image encoder, prompt decoding of the kept points,
merge. Prints seconds per image and peak memory (process RSS on CPU, allocated on CUDA).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from pseudolabel.core.devices import resolve_device
from pseudolabel.core.images import load_rgb
from pseudolabel.core.masks import read_mask
from pseudolabel.core.scoremaps import from_label_map
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.models.sam import SamPrompter, build_sam
from pseudolabel.refiners.crf import CrfRefiner
from pseudolabel.refiners.options import SamRefineOptions
from pseudolabel.refiners.sam import paint_candidates, point_candidates

HEIGHT, WIDTH = 375, 500


def scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy two-object image and its labels dilated by 8 px (a coarse pseudo-label)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.ellipse(labels, (150, 190), (70, 80), 10, 0, 360, 8, -1)
    cv2.rectangle(labels, (300, 90), (430, 290), 15, -1)
    rgb = rng.integers(0, 60, (HEIGHT, WIDTH, 3)).astype(np.uint8) + (labels[..., None] * 9).astype(np.uint8)
    return rgb, cv2.dilate(labels, np.ones((17, 17), np.uint8))


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "voc"


def example_photo(index: int) -> tuple[np.ndarray, np.ndarray]:
    """One of the bundled example photos and its coarse mask (GT dilated by 8 px)."""
    image_id = sorted(p.stem for p in (EXAMPLES / "coarse_masks").glob("*.png"))[index % 4]
    return load_rgb(EXAMPLES / "VOC2012" / "JPEGImages" / f"{image_id}.jpg"), read_mask(
        EXAMPLES / "coarse_masks" / f"{image_id}.png"
    )


def crf_one(seed: int, photo: bool = False) -> float:
    rgb, coarse = example_photo(seed) if photo else scene(seed)
    start = time.perf_counter()
    classes = tuple(sorted({0, *(int(c) for c in np.unique(coarse))} - {255}))
    CrfRefiner()(rgb, from_label_map(coarse, classes), StageRecord())
    return time.perf_counter() - start


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--sam", default="vit_b")
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-sam", action="store_true")
    args = parser.parse_args()

    photos = [crf_one(index, photo=True) for index in range(args.images)]
    print(f"DenseCRF 10 it on the example photos (about 500x375, 2 classes), 1 process: {np.mean(photos):.3f} s/image")
    per_image = [crf_one(seed) for seed in range(args.images)]
    print(
        f"DenseCRF 10 it, {WIDTH}x{HEIGHT} uniform-noise image (worst case), 3 classes, 1 process: "
        f"{np.mean(per_image):.3f} s/image"
    )
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(crf_one, range(args.images * cores)))
    seconds = (time.perf_counter() - start) / (args.images * cores)
    print(f"DenseCRF worst case over {cores} processes: {seconds:.3f} s/image")
    if args.skip_sam:
        return

    device = resolve_device(args.device)
    torch.manual_seed(0)
    predictor = SamPrompter(build_sam(args.sam, "random", device))
    encode = decode = merge = 0.0
    count = max(2, args.images // 4)
    for seed in range(count + 1):  # the first image warms up
        rgb, coarse = scene(seed)
        start = time.perf_counter()
        predictor.set_image(rgb)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        encoded = time.perf_counter()
        kept = point_candidates(coarse, predictor, SamRefineOptions(grid=args.grid, iou_threshold=0.0))
        decoded = time.perf_counter()
        paint_candidates(coarse, kept)
        done = time.perf_counter()
        if seed:
            encode, decode, merge = encode + encoded - start, decode + decoded - encoded, merge + done - decoded
    points = len(kept.scores)
    print(
        f"SAM {args.sam} random weights on {device}, {args.grid}x{args.grid} grid ({points} points inside regions): "
        f"encoder {encode / count:.3f} s, prompts {decode / count:.3f} s, merge {merge / count:.3f} s, "
        f"total {(encode + decode + merge) / count:.3f} s/image; peak memory {peak_memory_mb(device):.0f} MB"
    )


if __name__ == "__main__":
    main()

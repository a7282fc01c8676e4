"""Time `pseudolabel score` over VOC-train-sized data: 1,464 pairs of 500x375 masks.

    python benchmarks/score.py [--pairs 1464] [--workers 0]

Writes synthetic GT (objects + 255 boundary band) and predictions (shifted, noisy, with
unsure pixels) into a temporary folder, then prints pairs/s and total seconds for the
in-process path and the multi-process path. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pseudolabel.core.masks import write_mask
from pseudolabel.evaluate.scoring import pair_with_folder, score_pairs

HEIGHT, WIDTH, NUM_CLASSES = 375, 500, 21


def synthetic_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A VOC-like GT (2-3 ellipses, 5 px band of 255) and an imperfect prediction, uint8 [375, 500]."""
    gt = np.zeros((HEIGHT, WIDTH), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(50, WIDTH - 50)), int(rng.integers(50, HEIGHT - 50)))
        axes = (int(rng.integers(20, 150)), int(rng.integers(20, 120)))
        cv2.ellipse(gt, centre, axes, float(rng.integers(0, 180)), 0, 360, int(rng.integers(1, NUM_CLASSES)), -1)
    kernel = np.ones((5, 5), np.uint8)
    band = cv2.dilate(gt, kernel) != cv2.erode(gt, kernel)
    pred = np.roll(gt, int(rng.integers(-8, 9)), axis=1)
    pred[rng.random((HEIGHT, WIDTH)) < 0.02] = 255
    gt[band] = 255
    return gt, pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1464)
    parser.add_argument("--workers", type=int, default=0, help="0 = all cores")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for index in range(args.pairs):
            gt, pred = synthetic_pair(rng)
            write_mask(root / "gt" / f"{index:06d}.png", gt)
            write_mask(root / "pred" / f"{index:06d}.png", pred)
        pairs = pair_with_folder(root / "pred", root / "gt").pairs
        workers = args.workers or os.cpu_count() or 1
        for label, count in (("1 process", 1), (f"{workers} processes", workers)):
            start = time.perf_counter()
            score_pairs(pairs, NUM_CLASSES, workers=count)
            seconds = time.perf_counter() - start
            rate = len(pairs) / seconds
            print(f"score {len(pairs)} pairs of {WIDTH}x{HEIGHT}, {label}: {seconds:.2f} s ({rate:.0f} pairs/s)")


if __name__ == "__main__":
    main()

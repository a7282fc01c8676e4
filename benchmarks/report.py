"""Report and overlay speed: panels per second per core and report size per 1,000 images.

    python benchmarks/report.py [--images 1000]

Synthetic VOC-size images (500x375) with two objects; the prediction is the GT shifted by
6 px. Prints panel rates at the overlay command's size (512) and the report's (240), the time
to build a report of all images, and the page and folder sizes (scaled to VOC trainaug)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pseudolabel.core.masks import write_mask
from pseudolabel.datasets.voc import VocDataset
from pseudolabel.evaluate.overlay import render_panel
from pseudolabel.report.build import build_report

TRAINAUG = 10_582


def make_split(root: Path, count: int) -> tuple[Path, Path]:
    """A VOC folder of ``count`` synthetic images with GT, and a folder of shifted predictions."""
    voc, pred = root / "VOC2012", root / "pred"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = []
    for index in range(count):
        gt = np.zeros((375, 500), np.uint8)
        cv2.ellipse(gt, (150, 190), (70, 80), 10, 0, 360, int(rng.integers(1, 21)), -1)
        cv2.rectangle(gt, (300, 90), (430, 290), int(rng.integers(1, 21)), -1)
        rgb = rng.integers(0, 60, (375, 500, 3)).astype(np.uint8) + (gt[..., None] * 9).astype(np.uint8)
        image_id = f"{index:06d}"
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        write_mask(voc / "SegmentationClass" / f"{image_id}.png", gt)
        write_mask(pred / f"{image_id}.png", np.roll(gt, 6, axis=1))
        ids.append(image_id)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return voc, pred


def panels_per_second(dataset: VocDataset, pred: Path, side: int, count: int = 40) -> float:
    samples = [dataset.load(image_id) for image_id in dataset.ids()[:count]]
    masks = [np.asarray(Image.open(pred / f"{s.image_id}.png")) for s in samples]
    start = time.perf_counter()
    for sample, mask in zip(samples, masks, strict=True):
        render_panel(sample.rgb, mask, mask, dataset.class_names, side)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        voc, pred = make_split(Path(tmp), args.images)
        dataset = VocDataset(voc, "train")
        for side in (512, 240):
            print(f"panels at max side {side}: {panels_per_second(dataset, pred, side):.1f} panels/s on one core")
        start = time.perf_counter()
        page = build_report(dataset, [pred], Path(tmp) / "report", worst=12, workers=0)
        seconds = time.perf_counter() - start
        folder = sum(p.stat().st_size for p in page.parent.rglob("*") if p.is_file())
        html = page.stat().st_size
        per_thousand = 1000 / args.images
        print(f"report of {args.images} images in {seconds:.1f} s (scoring on all cores, 12 worst thumbnails)")
        print(
            f"index.html {html / 1e6 * per_thousand:.2f} MB and folder {folder / 1e6 * per_thousand:.2f} MB per 1,000 "
            f"images; about {html / 1e6 * TRAINAUG / args.images:.1f} MB of page for VOC trainaug ({TRAINAUG:,})"
        )


if __name__ == "__main__":
    main()

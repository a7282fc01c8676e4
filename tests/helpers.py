"""Builders of small datasets on disk for tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pseudolabel.core.masks import write_mask


def make_voc(root: Path, masks: dict[str, np.ndarray], split: str = "train", folder: str = "SegmentationClass") -> Path:
    """A VOC2012 folder with one JPEG per mask (same size) and the split list; returns VOC2012/."""
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, mask in masks.items():
        pixels = rng.integers(0, 255, size=(*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{image_id}.jpg")
        write_mask(voc / folder / f"{image_id}.png", mask)
    (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(masks) + "\n")
    return voc


def small_voc(root: Path, count: int = 5) -> Path:
    """``count`` random images im0, im1, ... (heights 40, 44, ..., width 56), each with one object of
    a class cycling over aeroplane... (8, 12, 15, 3, 19) and, every other image, a person too."""
    masks = {}
    for index in range(count):
        mask = np.zeros((40 + 4 * index, 56), np.uint8)
        mask[5:25, 5:30] = (8, 12, 15, 3, 19)[index % 5]
        if index % 2:
            mask[28:38, 35:50] = 15
        masks[f"im{index}"] = mask
    return make_voc(root, masks)


def generate_tiny(voc: Path, out: Path, *extra: str) -> Any:
    """``pseudolabel generate`` of a VOC folder with a tiny random CLIP on the CPU (CliRunner result)."""
    from tiny_clip import write_tiny_config
    from typer.testing import CliRunner

    from pseudolabel.cli import app

    args = ["generate", "--dataset", "voc", "--root", str(voc), "--out", str(out), "--clip-weights", "random"]
    args += ["--clip-model", str(write_tiny_config(out.parent)), "--device", "cpu", "--num-workers", "0", *extra]
    return CliRunner().invoke(app, args)


def voc_annotation(names: list[str]) -> str:
    """A VOC Annotations XML with one object per name."""
    objects = "".join(f"<object><name>{name}</name><difficult>0</difficult></object>" for name in names)
    return f"<annotation><filename>x.jpg</filename>{objects}</annotation>"


def make_coco(root: Path, split: str, images: dict[str, list[int]]) -> Path:
    """A COCO root with images named <stem>.jpg and instances with the given category ids."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    from pseudolabel.core.prompts import load_prompts

    categories = [{"id": c.coco_id, "name": c.name} for c in load_prompts("coco").classes[1:]]
    entries, annotations = [], []
    for number, (stem, category_ids) in enumerate(images.items(), start=1):
        Image.new("RGB", (8, 6), (number, 0, 0)).save(root / split / f"{stem}.jpg")
        entries.append({"id": number, "file_name": f"{stem}.jpg", "width": 8, "height": 6})
        annotations += [{"id": len(annotations) + 1, "image_id": number, "category_id": c} for c in category_ids]
    data = {"images": entries, "annotations": annotations, "categories": categories}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def score_sample(scorer, sample):
    """Run a Scorer on one sample: (ScoreMaps, the StageRecord it filled)."""
    from pseudolabel.core.stage_record import StageRecord

    record = StageRecord()
    return scorer(sample, record), record


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """This process's torch uses ``count`` threads inside the block. Float sums run in an order that
    depends on the thread count, so a byte comparison of two runs needs the same count on both sides."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stand_in_checkpoint(name: str) -> None:
    """A placeholder file where the registry checkpoint ``name`` would be cached: commands check
    that every checkpoint is there before any work, while the test builds a tiny model instead."""
    from pseudolabel.models.weights import WEIGHTS, cached_path

    path = cached_path(WEIGHTS[name])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"stand-in")

"""COCO instance annotations: RLE through pycocotools, or polygons with holes joined in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pseudolabel.core.components import Component
from pseudolabel.core.files import atomic_write_text
from pseudolabel.core.prompts import PromptSet
from pseudolabel.export.item import ExportItem
from pseudolabel.export.polygons import region_polygons
from pseudolabel.export.regions import Region

if TYPE_CHECKING:
    from pseudolabel.datasets.base import Dataset
    from pseudolabel.export.run import ExportRequest

COCO_RLE = Component(
    "exporter", "coco-rle", "COCO instances JSON, RLE masks.", "pseudolabel.export.coco_format:build",
    output_suffix=".json",
)  # fmt: skip
COCO_POLYGON = Component(
    "exporter", "coco-polygon", "COCO instances JSON, polygons (holes joined in).",
    "pseudolabel.export.coco_format:build", output_suffix=".json",
)  # fmt: skip


def category_ids(prompts: PromptSet) -> dict[int, int]:
    """Class id -> COCO category id: the prompt set's ``coco_id`` where it has one (stock COCO),
    else the class id itself (1..K-1)."""
    return {c: (entry.coco_id or c) for c, entry in enumerate(prompts.classes) if c > 0}


def categories(prompts: PromptSet) -> list[dict[str, Any]]:
    """The ``categories`` list: every class but background."""
    ids = category_ids(prompts)
    return [{"id": ids[c], "name": prompts.classes[c].name, "supercategory": ""} for c in ids]


def rle_segmentation(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of bool [H, W] ``mask`` as COCO JSON holds it (``counts`` as text)."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def polygon_segmentation(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons of bool [H, W] ``mask`` (x, y in pixels, corners at integers), one per outer
    boundary with its holes joined in (see :mod:`pseudolabel.export.polygons`)."""
    return [[round(float(v), 2) for v in polygon.ravel()] for polygon in region_polygons(mask)]


def annotation(region: Region, image_id: int, annotation_id: int, category: int, fmt: str) -> dict[str, Any]:
    """One COCO annotation of a scored region: ``area`` is its pixel count, ``bbox`` its extent."""
    rows, columns = np.nonzero(region.mask)
    bbox = [
        int(columns.min()),
        int(rows.min()),
        int(columns.max() - columns.min() + 1),
        int(rows.max() - rows.min() + 1),
    ]
    segmentation: Any = rle_segmentation(region.mask) if fmt == "coco-rle" else polygon_segmentation(region.mask)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": segmentation,
        "area": len(rows),
        "bbox": bbox,
        "iscrowd": 0,
        "score": region.score,
    }


class CocoWriter:
    """Collects images and annotations and writes one COCO instances JSON file at the end."""

    def __init__(self, out: Path, fmt: str, prompts: PromptSet, description: str) -> None:
        self.out, self.fmt, self.prompts, self.description = out, fmt, prompts, description
        self.category = category_ids(prompts)
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add(self, item: ExportItem) -> None:
        height, width = item.label_map.shape
        self.images.append({"id": item.number, "file_name": item.file_name, "width": width, "height": height})
        for region in item.regions:
            entry = annotation(region, item.number, len(self.annotations) + 1, self.category[region.class_id], self.fmt)
            self.annotations.append(entry)

    def finish(self) -> None:
        document = {
            "info": {"description": self.description},
            "images": self.images,
            "annotations": self.annotations,
            "categories": categories(self.prompts),
        }
        atomic_write_text(self.out, json.dumps(document))


def build(dataset: Dataset, request: ExportRequest, options: None) -> CocoWriter:
    """The COCO writer of ``request.fmt`` (RLE or polygons)."""
    return CocoWriter(request.out, request.fmt, dataset.prompts, f"pseudolabel export of {request.masks}")

"""COCO instance annotations from regions: RLE through pycocotools, or polygons through OpenCV."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pseudolabel.export.regions import Region
from pseudolabel.prompts import PromptSet

COCO_FORMATS = ("coco-rle", "coco-polygon")


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
    """Outer contours of bool [H, W] ``mask`` as COCO polygons (x, y in pixels, pixel corners at
    integers); holes are not represented.

    The contour is traced on the mask upsampled 2x, so it runs a quarter pixel inside the region's
    outer pixel edges: rasterised again (pycocotools, or OpenCV at pixel centres) it gives back the
    region's pixels, where a contour through boundary pixel centres loses thin parts.
    """
    doubled = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2
        if len(points) >= 3:
            polygons.append([round(float(v), 2) for v in points.ravel()])
    return polygons


def annotation(region: Region, image_id: int, annotation_id: int, category: int, fmt: str) -> dict[str, Any] | None:
    """One COCO annotation (None when a polygon cannot be drawn: a region under 3 contour points)."""
    rows, columns = np.nonzero(region.mask)
    bbox = [
        int(columns.min()),
        int(rows.min()),
        int(columns.max() - columns.min() + 1),
        int(rows.max() - rows.min() + 1),
    ]
    segmentation: Any = rle_segmentation(region.mask) if fmt == "coco-rle" else polygon_segmentation(region.mask)
    if not segmentation:
        return None
    entry = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": segmentation,
        "area": len(rows),
        "bbox": bbox,
        "iscrowd": 0,
    }
    if region.score is not None:  # a labeler's own instance: its confidence, as detection results carry
        entry["score"] = round(region.score, 6)
    return entry

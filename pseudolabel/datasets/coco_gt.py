"""Semantic GT masks rendered from COCO instance annotations (polygons, RLE, uncompressed RLE)
with pycocotools, cached once as palette PNGs.

Convention: the image starts as background; non-crowd instances are painted in the order the
annotations file lists them (a later instance covers an earlier one where they overlap); crowd
regions (``iscrowd: 1``) are then painted 255, so they are never scored. Polygons of fewer than
3 points or of zero area are skipped (the dataset says how many when it opens). The cache lives in
``$PSEUDOLABEL_HOME/coco_gt/<split>-<digest>/`` (the digest names the annotations file by path,
size and modification time) with ``complete.json`` once every image is written; an interrupted
render resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.core.files import atomic_write_text, home_dir, read_user_text
from pseudolabel.core.masks import IGNORE_INDEX, write_mask
from pseudolabel.core.safe_paths import id_path

COMPLETE = "complete.json"


def cache_folder(instances: Path, split: str) -> Path:
    """The cache folder of one annotations file."""
    status = instances.stat()
    key = f"{os.path.realpath(instances)}|{status.st_size}|{status.st_mtime_ns}"
    return home_dir() / "coco_gt" / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def drawable(segmentation: Any) -> Any:
    """What pycocotools can draw of a segmentation: its polygons of at least 3 points and non-zero
    area (the others dropped; pycocotools fails on 1- and 2-point ones), or RLE as it is; None
    when no polygon is left."""
    if not isinstance(segmentation, list):
        return segmentation
    kept = [polygon for polygon in segmentation if _is_area(polygon)]
    return kept or None


def _is_area(polygon: Any) -> bool:
    """A flat [x0, y0, x1, y1, ...] list of at least 3 points enclosing a non-zero area (shoelace)."""
    if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
        return False
    try:
        xs, ys = np.asarray(polygon[0::2], np.float64), np.asarray(polygon[1::2], np.float64)
    except (TypeError, ValueError):
        return False
    return bool(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) > 0)


def instance_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """bool [H, W] of one annotation's segmentation: polygons, compressed or uncompressed RLE."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return coco_mask.decode(rle).astype(bool)


def render_semantic(annotations: list[dict[str, Any]], height: int, width: int, class_of: dict[int, int]) -> np.ndarray:
    """uint8 [H, W]: instances in file order over background, then crowd regions as 255.

    Args:
        class_of: COCO category id -> contiguous class id.
    """
    label_map = np.zeros((height, width), np.uint8)
    # detection-only entries have no segmentation; degenerate polygons are dropped (see drawable)
    drawn = [(a, drawable(a["segmentation"])) for a in annotations if a.get("segmentation")]
    drawn = [(annotation, segmentation) for annotation, segmentation in drawn if segmentation is not None]
    for annotation, segmentation in drawn:
        if not annotation.get("iscrowd"):
            label_map[instance_mask(segmentation, height, width)] = class_of[annotation["category_id"]]
    for annotation, segmentation in drawn:
        if annotation.get("iscrowd"):
            label_map[instance_mask(segmentation, height, width)] = IGNORE_INDEX
    return label_map


def render_cache(
    instances: Path, split: str, class_of: dict[int, int], on_progress: Callable[[int, int], None] | None = None
) -> Path:
    """Render every annotated image's GT into the cache (skipping those already there); returns the
    folder. ``on_progress(done, total)`` is called as images are written."""
    folder = cache_folder(instances, split)
    if (folder / COMPLETE).is_file():
        return folder
    data = json.loads(read_user_text(instances, "COCO annotations"))
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for annotation in data.get("annotations", []):
        by_image[annotation["image_id"]].append(annotation)
    images = [image for image in data.get("images", []) if image["id"] in by_image]
    del data
    for done, image in enumerate(images, start=1):
        target = id_path(folder, Path(image["file_name"]).stem, ".png")
        if not target.is_file():
            write_mask(target, render_semantic(by_image[image["id"]], image["height"], image["width"], class_of))
        if on_progress:
            on_progress(done, len(images))
    atomic_write_text(folder / COMPLETE, json.dumps({"annotations": str(instances), "images": len(images)}))
    return folder

"""Ultralytics YOLO-seg: ``images/<split>/``, ``labels/<split>/<name>.txt`` with one line per
region (class index from 0, then the polygon's x y pairs normalised to [0, 1]) and ``data.yaml``."""

from __future__ import annotations

import numpy as np

from pseudolabel.export.coco_format import polygon_segmentation
from pseudolabel.export.regions import Region


def yolo_lines(regions: list[Region], height: int, width: int) -> list[str]:
    """Label-file lines: ``<class - 1> x1 y1 x2 y2 ...`` for each region's outer contours."""
    lines = []
    scale = np.array([width, height], dtype=np.float64)
    for region in regions:
        for polygon in polygon_segmentation(region.mask):
            points = np.clip(np.asarray(polygon).reshape(-1, 2) / scale, 0.0, 1.0)
            lines.append(" ".join([str(region.class_id - 1), *(f"{v:.6f}" for v in points.ravel())]))
    return lines


def data_yaml(class_names: list[str], split: str) -> dict[str, object]:
    """``data.yaml`` for the export folder (``path`` is the folder; names indexed from 0)."""
    return {"path": ".", split: f"images/{split}", "names": dict(enumerate(class_names[1:]))}

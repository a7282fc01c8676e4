"""Polygons of a region, holes included: each hole is joined to its outer contour by a zero-width
cut, so one polygon per outer boundary says the whole region in the formats that hold plain
polygons (COCO, YOLO-seg, Label Studio).

Coordinates are in pixels with pixel corners at integers (COCO's convention: pixel (row r,
column c) covers x in [c, c + 1], y in [r, r + 1]). Every vertex lies a quarter pixel inside the
region's pixel edges, so the polygon gives the region's pixels back under both rasterisations
the consumers use: pycocotools (pixel centres at +0.5) exactly, and Ultralytics (vertices
truncated to integers, then OpenCV's ``fillPoly``, which fills the polygon's edges too) but for
a pixel or two where two holes touch at a corner (see :func:`_join`).
"""

from __future__ import annotations

import cv2
import numpy as np

_PAIR_BLOCK = 1 << 22
"""Most point pairs compared at once when looking for a cut (memory bound, ~32 MB of float64)."""


def region_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """One polygon per outer boundary of bool [H, W] ``mask``, its holes joined in.

    Returns:
        float64 [N, 2] arrays of (x, y) vertices in pixels; empty for an empty mask.
    """
    doubled = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    links = hierarchy[0]  # per contour: next, previous, first child, parent
    polygons = []
    for index, contour in enumerate(contours):
        if links[index][3] != -1:
            continue  # a hole: joined to its outer contour below
        path = contour.reshape(-1, 2)
        child = links[index][2]
        while child != -1:
            path = _join(path, contours[child].reshape(-1, 2))
            child = links[child][0]
        polygons.append((_without_collinear(path).astype(np.float64) + 0.5) / 2)
    return polygons


def _join(path: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``path`` with ``hole`` spliced in at their closest points: ... P, Q, hole ..., Q, P, ...

    The cut P-Q runs both ways, so it encloses no area: pycocotools gives the region back exactly.
    OpenCV's ``fillPoly`` (Ultralytics) also fills the pixels the cut crosses, the region's own
    for the closest pair except where two holes touch at a corner (then one or two pixels of a
    hole are filled; measured: 7 of 10,319 random regions, worst IoU 0.995).
    """
    best = (np.inf, 0, 0)
    block = max(1, _PAIR_BLOCK // len(path))
    points = path.astype(np.float64)
    for start in range(0, len(hole), block):
        chunk = hole[start : start + block].astype(np.float64)
        distances = ((chunk[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
        flat = int(distances.argmin())
        hole_index, path_index = divmod(flat, len(path))
        if distances.flat[flat] < best[0]:
            best = (distances.flat[flat], start + hole_index, path_index)
    _, q, p = best
    around_hole = np.concatenate([hole[q:], hole[: q + 1]])
    return np.concatenate([path[: p + 1], around_hole, path[p:]])


def _without_collinear(path: np.ndarray) -> np.ndarray:
    """Drop vertices in the middle of straight runs of unit steps (what ``CHAIN_APPROX_SIMPLE``
    does), keeping the cut's end points."""
    if len(path) < 3:
        return path
    incoming = path - np.roll(path, 1, axis=0)
    outgoing = np.roll(path, -1, axis=0) - path
    unit = np.abs(outgoing).max(axis=1) == 1
    straight = unit & (incoming == outgoing).all(axis=1)
    return path[~straight]

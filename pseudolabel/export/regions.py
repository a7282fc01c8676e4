"""Regions of a semantic label map: one per connected component of each class, or one per class,
each with the score an export gives it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from pseudolabel.core.masks import IGNORE_INDEX
from pseudolabel.core.scoremaps import ScoreMaps

INSTANCE_MODES = ("regions", "none")
"""``regions``: one region per 8-connected component of a class; ``none``: one per class."""
DEFAULT_REGION_SCORE = 1.0
"""A region's score when neither the labeler nor saved score maps give one."""


@dataclass(frozen=True)
class Region:
    """One exported region: its class id, bool [H, W] mask (never holding 255 or background) and
    its confidence in [0, 1] (None until :func:`scored` sets it, unless a labeler gave one)."""

    class_id: int
    mask: np.ndarray
    score: float | None = None


def label_regions(label_map: np.ndarray, instances: str = "regions") -> list[Region]:
    """The regions of uint8 [H, W] ``label_map`` by class id, then by component (top-left first).

    Background (0) and unsure (255) pixels are never part of a region.
    """
    if instances not in INSTANCE_MODES:
        raise ValueError(f"instances must be one of {INSTANCE_MODES}")
    regions = []
    for class_id in np.unique(label_map):
        if class_id in (0, IGNORE_INDEX):
            continue
        mask = label_map == class_id
        if instances == "none":
            regions.append(Region(int(class_id), mask))
            continue
        count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions.extend(Region(int(class_id), components == index) for index in range(1, count))
    return regions


def instance_regions(masks: np.ndarray, class_ids: np.ndarray, scores: np.ndarray) -> list[Region]:
    """A labeler's instances as regions (empty masks left out), in their saved order."""
    return [
        Region(int(c), mask, float(score))
        for mask, c, score in zip(masks, class_ids, scores, strict=True)
        if mask.any()
    ]


def scored(regions: list[Region], maps: ScoreMaps | None) -> list[Region]:
    """``regions``, each with a score: its own (a labeler's instance), else the mean over its
    pixels of its class's channel in ``maps`` (0 when the maps have no such channel), else
    :data:`DEFAULT_REGION_SCORE`. Scores are rounded to 6 decimals."""
    out = []
    for region in regions:
        score = region.score
        if score is None and maps is not None:
            channel = maps.class_ids.index(region.class_id) if region.class_id in maps.class_ids else None
            score = 0.0 if channel is None else float(maps.scores[channel][region.mask].mean())
        out.append(replace(region, score=round(DEFAULT_REGION_SCORE if score is None else score, 6)))
    return out

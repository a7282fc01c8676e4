"""SAM refinement of pseudo-labels.

* ``points`` (CEP): an N x N grid of candidate points; the points inside a foreground class's
  pseudo-label region prompt SAM (one image embedding per image, prompts in batches, one mask
  each); a mask is kept when its IoU with that class's region is at least ``iou_threshold``.
* ``auto`` (SEPL-style): SAM's automatic masks; a mask goes to foreground class c when more
  than ``inside_share`` of it lies in c's region, or it covers at least ``region_cover`` of it.

Kept masks are merged by confidence (SAM's predicted IoU): a pixel covered by several kept
masks takes the class of the highest-scoring one; pixels no kept mask covers keep their input
label (255 included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from pseudolabel.masks import IGNORE_INDEX
from pseudolabel.scoremaps import ScoreMaps

SAM_MODES = ("points", "auto")


@dataclass(frozen=True)
class SamRefineOptions:
    """SAM refinement settings (CEP and SEPL defaults)."""

    mode: str = "points"
    grid: int = 16
    iou_threshold: float = 0.5
    inside_share: float = 0.5
    region_cover: float = 0.85
    batch: int = 64


@dataclass(frozen=True)
class Candidate:
    """A SAM mask proposed for a class: bool [H, W] and SAM's confidence."""

    class_id: int
    mask: np.ndarray
    score: float


class PointMaskPredictor(Protocol):
    """What point-mode refinement needs from SAM (a fake can stand in for tests)."""

    def set_image(self, rgb: np.ndarray) -> None: ...

    def predict_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mask per point: (bool [P, H, W], scores [P]) for points float [P, 2] as (x, y)."""
        ...


class SamPointPredictor:
    """``PointMaskPredictor`` over ``segment_anything.SamPredictor``, prompts in batches."""

    def __init__(self, sam: Any, batch: int = 64) -> None:
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam)
        self.batch = batch

    def set_image(self, rgb: np.ndarray) -> None:
        self.predictor.set_image(np.ascontiguousarray(rgb), image_format="RGB")

    @torch.no_grad()
    def predict_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        predictor = self.predictor
        masks, scores = [], []
        for start in range(0, len(points), self.batch):
            chunk = torch.as_tensor(points[start : start + self.batch, None, :], dtype=torch.float32)
            coords = predictor.transform.apply_coords_torch(chunk, predictor.original_size).to(predictor.device)
            labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=predictor.device)
            batch_masks, batch_scores, _ = predictor.predict_torch(coords, labels, multimask_output=False)
            masks.append(batch_masks[:, 0].cpu().numpy())
            scores.append(batch_scores[:, 0].float().cpu().numpy())
        return np.concatenate(masks), np.concatenate(scores)


def grid_points(height: int, width: int, per_side: int) -> np.ndarray:
    """Cell centres of a per_side x per_side grid over the image: float32 [per_side**2, 2] as (x, y)."""
    xs = (np.arange(per_side) + 0.5) * width / per_side
    ys = (np.arange(per_side) + 0.5) * height / per_side
    return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)


def foreground_classes(labels: np.ndarray) -> list[int]:
    """Class ids in a label map other than background and 255."""
    return [int(c) for c in np.unique(labels) if c not in (0, IGNORE_INDEX)]


def points_by_class(labels: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grid points that fall on a foreground class, and that class: (float [P, 2], int [P])."""
    columns = np.clip(points[:, 0].astype(int), 0, labels.shape[1] - 1)
    rows = np.clip(points[:, 1].astype(int), 0, labels.shape[0] - 1)
    classes = labels[rows, columns].astype(int)
    keep = (classes != 0) & (classes != IGNORE_INDEX)
    return points[keep], classes[keep]


def mask_iou(mask: np.ndarray, region: np.ndarray) -> float:
    """IoU of two bool masks (0 when both are empty)."""
    union = np.count_nonzero(mask | region)
    return np.count_nonzero(mask & region) / union if union else 0.0


def merge_candidates(labels: np.ndarray, candidates: list[Candidate]) -> np.ndarray:
    """Paint kept masks over the input: each covered pixel takes the class of its best-scoring mask."""
    best = np.full(labels.shape, -np.inf, dtype=np.float32)
    merged = labels.copy()
    for candidate in candidates:
        wins = candidate.mask & (candidate.score > best)
        merged[wins] = candidate.class_id
        best[wins] = candidate.score
    return merged


def point_candidates(labels: np.ndarray, predictor: PointMaskPredictor, options: SamRefineOptions) -> list[Candidate]:
    """CEP: prompt with the grid points inside each class region, keep masks with IoU >= threshold."""
    points, classes = points_by_class(labels, grid_points(*labels.shape, options.grid))
    if len(points) == 0:
        return []
    masks, scores = predictor.predict_points(points)
    kept = []
    for class_id, mask, score in zip(classes, masks, scores, strict=True):
        if mask_iou(mask, labels == class_id) >= options.iou_threshold:
            kept.append(Candidate(int(class_id), mask, float(score)))
    return kept


def auto_candidates(labels: np.ndarray, masks: list[dict[str, Any]], options: SamRefineOptions) -> list[Candidate]:
    """SEPL: a mask goes to class c if > inside_share of it is in c's region or it covers >= region_cover of it."""
    kept = []
    regions = {class_id: labels == class_id for class_id in foreground_classes(labels)}
    for proposal in masks:
        mask = proposal["segmentation"]
        area = np.count_nonzero(mask)
        for class_id, region in regions.items():
            inside = np.count_nonzero(mask & region)
            if area and (
                inside / area > options.inside_share or inside / np.count_nonzero(region) >= options.region_cover
            ):
                kept.append(Candidate(class_id, mask, float(proposal["predicted_iou"])))
    return kept


class SamRefiner:
    """Refiner stage over a SAM model built once: (rgb, scores, labels) -> refined labels."""

    def __init__(self, sam: Any, options: SamRefineOptions | None = None) -> None:
        self.options = options or SamRefineOptions()
        if self.options.mode not in SAM_MODES:
            raise ValueError(f"mode must be one of {SAM_MODES}")
        self.predictor = SamPointPredictor(sam, self.options.batch) if self.options.mode == "points" else None
        self.generator = None
        if self.options.mode == "auto":
            from segment_anything import SamAutomaticMaskGenerator

            self.generator = SamAutomaticMaskGenerator(
                sam, points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95, box_nms_thresh=0.7
            )

    def __call__(self, rgb: np.ndarray, maps: ScoreMaps, labels: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Refined uint8 [H, W] labels and manifest fields (``maps`` is unused: SAM works on labels)."""
        start = time.perf_counter()
        if self.predictor is not None:
            self.predictor.set_image(rgb)
            candidates = point_candidates(labels, self.predictor, self.options)
        else:
            candidates = auto_candidates(labels, self.generator.generate(np.ascontiguousarray(rgb)), self.options)
        refined = merge_candidates(labels, candidates)
        return refined, {"sam_masks_kept": len(candidates), "sam_s": round(time.perf_counter() - start, 4)}

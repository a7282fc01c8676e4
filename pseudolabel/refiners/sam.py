"""SAM refinement of pseudo-labels.

* ``points`` (CEP): an N x N grid of candidate points; the points inside a foreground class's
  pseudo-label region prompt SAM (one image embedding per image, prompts in batches, one mask
  each); a mask is kept when its IoU with that class's region is at least ``iou_threshold``.
  Kept masks are merged by confidence (SAM's predicted IoU): a pixel covered by several kept
  masks takes the class of the highest-scoring one; pixels no kept mask covers keep their input
  label (255 included).
* ``auto`` (SEPL, the rule of SAM_WSSS's ``merge/max_iou_imp2.py``): SAM's automatic masks;
  see :func:`sepl_assign`.
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


def sepl_assign(labels: np.ndarray, masks: list[np.ndarray], options: SamRefineOptions) -> tuple[np.ndarray, int]:
    """SEPL's assignment of SAM's automatic masks to the classes of a pseudo-label map.

    The output starts as background. Classes are visited in ascending id order. For class c with
    region R, every mask not yet given to an earlier class is on offer; it is given to c when
    more than ``inside_share`` of it lies in R or it covers at least ``region_cover`` of R, and
    is then offered to no later class. c's output is the union of its masks plus the pixels of R
    that no mask on offer to c covers (masks given to earlier classes do not count): a pixel of
    R under a mask that was on offer to c but not taken by it becomes background. A later class
    paints over an earlier one.

    Departure (the reference's inputs hold no 255): input pixels of 255 that no given mask
    covers stay 255 instead of becoming background.

    Args:
        labels: uint8 [H, W] pseudo-labels, 255 = unsure.
        masks: bool [H, W] SAM masks.

    Returns:
        (uint8 [H, W] refined labels, number of masks given to a class).
    """
    refined = np.where(labels == IGNORE_INDEX, IGNORE_INDEX, 0).astype(np.uint8)
    on_offer = list(range(len(masks)))
    for class_id in foreground_classes(labels):
        region = labels == class_id
        region_area = np.count_nonzero(region)
        covered = np.zeros(labels.shape, dtype=bool)
        claimed = []
        for index in on_offer:
            mask = masks[index]
            covered |= mask
            inside = np.count_nonzero(mask & region)
            if inside > options.inside_share * np.count_nonzero(mask) or inside >= options.region_cover * region_area:
                claimed.append(index)
        painted = region & ~covered
        for index in claimed:
            painted |= masks[index]
        refined[painted] = class_id
        on_offer = [index for index in on_offer if index not in claimed]
    return refined, len(masks) - len(on_offer)


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
            refined, kept = merge_candidates(labels, candidates), len(candidates)
        else:
            proposals = self.generator.generate(np.ascontiguousarray(rgb))
            refined, kept = sepl_assign(labels, [p["segmentation"] for p in proposals], self.options)
        return refined, {"sam_masks_kept": kept, "sam_s": round(time.perf_counter() - start, 4)}

"""SAM refinement of pseudo-labels: ScoreMaps in, ScoreMaps out.

The input scores are decoded (best class, 255 where unsure) into the label map SAM refines; the
output keeps the input scores wherever SAM left the label as it was, and gives a repainted pixel
the hard-label scores of its new class (``label_confidence``), so refiners chain in any order.

* ``points`` (CEP): an N x N grid of candidate points; the points inside a foreground class's
  pseudo-label region prompt SAM (one image embedding per image, prompts in batches, one mask
  each); a mask is kept when its IoU with that class's region is at least ``iou_threshold``.
  Kept masks are merged by confidence (SAM's predicted IoU): a pixel covered by several kept
  masks takes the class of the highest-scoring one; pixels no kept mask covers keep their input
  label (255 included).
* ``auto`` (SEPL, the rule of SAM_WSSS's ``merge/max_iou_imp2.py``): the SAM family's automatic
  masks at its published defaults; see :func:`sepl_assign`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from pseudolabel.core.masks import IGNORE_INDEX
from pseudolabel.core.scoremaps import ScoreMaps, decode, relabel
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.models.sam import PromptedSegmenter, channel_maxima
from pseudolabel.refiners.options import SAM_MODES, SamRefineOptions

if TYPE_CHECKING:
    from pseudolabel.registry import ModelHub
    from pseudolabel.settings import RefinerSettings


@dataclass(frozen=True)
class Candidates:
    """SAM masks proposed for classes: masks bool [N, H, W], confidences float [N], class ids int [N]."""

    masks: torch.Tensor
    scores: torch.Tensor
    class_ids: torch.Tensor


class PointMaskPredictor(Protocol):
    """What point-mode refinement needs from SAM (:class:`PromptedSegmenter`; a fake can stand in for tests)."""

    def set_image(self, rgb: np.ndarray) -> None: ...

    def predict_points(self, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per point: (bool [P, H, W], scores [P]) for points float [P, 2] as (x, y)."""
        ...


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


def paint_candidates(label_map: np.ndarray, candidates: Candidates) -> np.ndarray:
    """Paint kept masks over the input: each covered pixel takes the class of its best-scoring mask."""
    if not len(candidates.scores):
        return label_map.copy()
    classes, channels = candidates.class_ids.unique(return_inverse=True)
    best = channel_maxima(candidates.masks, candidates.scores, channels, len(classes), empty=-torch.inf)
    covered = candidates.masks.any(dim=0).cpu().numpy()
    painted = label_map.copy()
    painted[covered] = classes.to(torch.uint8).cpu().numpy()[best.argmax(dim=0).cpu().numpy()][covered]
    return painted


def point_candidates(label_map: np.ndarray, predictor: PointMaskPredictor, options: SamRefineOptions) -> Candidates:
    """CEP: prompt with the grid points inside each class region, keep masks with IoU >= threshold."""
    points, classes = points_by_class(label_map, grid_points(*label_map.shape, options.grid))
    if len(points) == 0:
        return Candidates(torch.zeros(0, *label_map.shape, dtype=torch.bool), torch.zeros(0), torch.zeros(0))
    masks, scores = predictor.predict_points(points)
    class_ids = torch.as_tensor(classes, device=masks.device)
    regions = torch.as_tensor(label_map, device=masks.device)[None] == class_ids[:, None, None]
    overlap = (masks & regions).flatten(1).sum(dim=1)
    union = (masks | regions).flatten(1).sum(dim=1)
    keep = (overlap.double() / union.clamp(min=1).double()) >= options.iou_threshold
    return Candidates(masks[keep], scores[keep], class_ids[keep])


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
    """Refiner stage over a shared SAM of any family (:class:`PromptedSegmenter`): ScoreMaps in,
    ScoreMaps out."""

    def __init__(self, prompter: PromptedSegmenter, options: SamRefineOptions | None = None) -> None:
        self.options = options or SamRefineOptions()
        if self.options.mode not in SAM_MODES:
            raise ValueError(f"mode must be one of {SAM_MODES}")
        self.prompter = prompter

    def __call__(self, rgb: np.ndarray, maps: ScoreMaps, record: StageRecord) -> ScoreMaps:
        """Refined scores of uint8 [H, W, 3] ``rgb``; records ``sam_masks_kept`` and ``sam_s``."""
        with record.timed("sam_s"):
            label_map = decode(maps)
            if self.options.mode == "points":
                self.prompter.set_image(rgb)
                candidates = point_candidates(label_map, self.prompter, self.options)
                refined, kept = paint_candidates(label_map, candidates), len(candidates.scores)
            else:
                refined, kept = sepl_assign(label_map, self.prompter.automatic_masks(rgb), self.options)
            record["sam_masks_kept"] = kept
        return relabel(maps, refined, self.options.label_confidence)


def build(hub: ModelHub, settings: RefinerSettings, options: SamRefineOptions) -> SamRefiner:
    """Point prompts (CEP) or automatic masks (SEPL) on the run's shared SAM; a repainted pixel
    scores the run's ``label_confidence``."""
    return SamRefiner(hub.sam(), replace(options, label_confidence=settings.label_confidence))

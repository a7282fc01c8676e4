"""Segmentation metrics accumulated over a dataset: confusion matrix, IoU, boundary IoU.

Conventions (also written into every score report):

* One confusion matrix ``[K, K + 1]`` over all pixels of all images: row = GT class, column =
  predicted class, last column = predicted 255 ("unsure"). GT 255 pixels are left out.
* ``iou`` / ``miou``: a predicted 255 counts as a miss for the GT class and as nothing for
  the other classes. ``iou_confident`` / ``miou_confident``: only pixels with a confident
  prediction. ``coverage``: share of valid GT pixels with a confident prediction.
* Means are over classes with GT pixels (the WSSS convention); ``miou_gt_or_pred`` averages
  over classes present in GT or prediction.
* Boundary IoU (Cheng et al., CVPR 2021), per class on binary masks: boundary = mask minus
  its erosion by a (2d+1) square, pixels outside the image counting as not-mask,
  d = max(1, round(0.02 * image diagonal)), or a fixed square of K x K pixels (d = (K - 1) / 2)
  when a kernel is given (CEP's mBIoU uses K = 23). Boundary pixels where GT is 255 are left
  out. Intersections and unions are summed over the dataset before dividing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from pseudolabel.core.errors import MaskError
from pseudolabel.core.masks import IGNORE_INDEX

BOUNDARY_RATIO = 0.02


def boundary_width(height: int, width: int, ratio: float = BOUNDARY_RATIO) -> int:
    """Boundary thickness d in pixels: max(1, round(ratio * diagonal)), rounding half to even."""
    return max(1, round(ratio * math.sqrt(height**2 + width**2)))


def mask_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Inner boundary of a binary mask.

    Args:
        mask: bool [H, W].
        width: d; a pixel is on the boundary when some pixel within Chebyshev distance d is
            outside the mask or outside the image.

    Returns:
        bool [H, W].
    """
    kernel = np.ones((2 * width + 1, 2 * width + 1), dtype=np.uint8)
    eroded = cv2.erode(mask.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & ~eroded.view(bool)


@dataclass
class Counts:
    """Additive pixel counts for one image or a whole dataset (K = number of classes).

    Attributes:
        confusion: int64 [K, K + 1]; last column = predicted 255.
        boundary_intersection: int64 [K] boundary pixels in both GT and prediction.
        boundary_union: int64 [K] boundary pixels in GT or prediction.
    """

    num_classes: int
    confusion: np.ndarray = field(init=False)
    boundary_intersection: np.ndarray = field(init=False)
    boundary_union: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        self.boundary_intersection = np.zeros(self.num_classes, dtype=np.int64)
        self.boundary_union = np.zeros(self.num_classes, dtype=np.int64)

    def add(self, other: Counts) -> None:
        """Accumulate another image's (or shard's) counts."""
        self.confusion += other.confusion
        self.boundary_intersection += other.boundary_intersection
        self.boundary_union += other.boundary_union


def count_pair(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, name: str = "", boundary_kernel: int | None = None
) -> Counts:
    """Counts of one prediction against its GT.

    Args:
        gt: uint8 [H, W] class ids, 255 = ignore.
        pred: uint8 [H, W] class ids, 255 = unsure.
        name: image name for error messages.
        boundary_kernel: odd K: boundaries are eroded by a K x K square; None: Cheng's 2 % of
            the diagonal.

    Raises:
        MaskError: different sizes, or values that are neither class ids nor 255.
    """
    if gt.shape != pred.shape:
        raise MaskError(
            f"size mismatch for {name}: prediction is {pred.shape[1]}x{pred.shape[0]}, "
            f"GT is {gt.shape[1]}x{gt.shape[0]} (width x height)"
        )
    joint = np.bincount(gt.ravel().astype(np.int32) * 256 + pred.ravel(), minlength=256 * 256).reshape(256, 256)
    for what, histogram in (("GT", joint.sum(axis=1)), ("prediction", joint.sum(axis=0))):
        bad = np.flatnonzero(histogram[num_classes:IGNORE_INDEX])
        if bad.size:
            values = ", ".join(str(int(v) + num_classes) for v in bad[:5])
            raise MaskError(
                f"{what} of {name} holds values {values} beyond the {num_classes} classes (0..{num_classes - 1}, 255)"
            )
    counts = Counts(num_classes)
    columns = [*range(num_classes), IGNORE_INDEX]
    counts.confusion[:] = joint[:num_classes][:, columns]
    in_gt = counts.confusion.sum(axis=1) > 0
    in_pred = counts.confusion[:, :num_classes].sum(axis=0) > 0
    present = np.flatnonzero(in_gt | in_pred)
    if present.size:
        width = boundary_width(*gt.shape) if boundary_kernel is None else (boundary_kernel - 1) // 2
        valid = gt != IGNORE_INDEX
        for class_id in present:
            gt_edge = mask_boundary(gt == class_id, width)
            pred_edge = mask_boundary(pred == class_id, width)
            counts.boundary_intersection[class_id] = np.count_nonzero(gt_edge & pred_edge & valid)
            counts.boundary_union[class_id] = np.count_nonzero((gt_edge | pred_edge) & valid)
    return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray, defined: np.ndarray) -> list[float | None]:
    return [
        float(n) / float(d) if ok and d > 0 else None for n, d, ok in zip(numerator, denominator, defined, strict=True)
    ]


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize(counts: Counts) -> dict[str, Any]:
    """All dataset-level figures from accumulated counts (fractions in [0, 1]; None = undefined)."""
    confusion = counts.confusion.astype(np.float64)
    num_classes = counts.num_classes
    confident = confusion[:, :num_classes]
    true_positive = np.diag(confident)
    gt_pixels = confusion.sum(axis=1)
    pred_pixels = confident.sum(axis=0)
    has_gt = gt_pixels > 0
    has_confident_gt = confident.sum(axis=1) > 0
    false_positive = pred_pixels - true_positive
    iou = _ratio(true_positive, gt_pixels + false_positive, has_gt)
    iou_confident = _ratio(true_positive, confident.sum(axis=1) + false_positive, has_confident_gt)
    in_gt_or_pred = has_gt | (pred_pixels > 0)
    iou_any = _ratio(true_positive, gt_pixels + false_positive, in_gt_or_pred)
    biou = _ratio(counts.boundary_intersection, counts.boundary_union, has_gt)
    valid_total = confusion.sum()
    confident_total = confident.sum()
    return {
        "miou": _mean(iou),
        "iou": iou,
        "mbiou": _mean(biou),
        "biou": biou,
        "coverage": confident_total / valid_total if valid_total else None,
        "pixel_accuracy": true_positive.sum() / valid_total if valid_total else None,
        "miou_confident": _mean(iou_confident),
        "iou_confident": iou_confident,
        "pixel_accuracy_confident": true_positive.sum() / confident_total if confident_total else None,
        "miou_gt_or_pred": _mean(iou_any),
        "precision": _ratio(true_positive, pred_pixels, pred_pixels > 0),
        "recall": _ratio(true_positive, gt_pixels, has_gt),
        "gt_pixels": [int(v) for v in counts.confusion.sum(axis=1)],
        "pred_pixels": [int(v) for v in counts.confusion[:, :num_classes].sum(axis=0)],
        "confusion_matrix": counts.confusion.tolist(),
    }


CONVENTIONS = {
    "values": "fractions in [0, 1]; null = undefined (class without GT pixels)",
    "miou": "mean IoU over classes with GT pixels; predicted 255 counts as a miss for the GT class",
    "miou_confident": "mean IoU over classes with GT pixels, on pixels with a confident (non-255) prediction",
    "miou_gt_or_pred": "mean IoU over classes present in GT or prediction",
    "coverage": "share of valid GT pixels (GT != 255) whose prediction is not 255",
    "mbiou": "boundary IoU (Cheng et al. 2021): boundary = mask minus its erosion by a (2d+1) square, "
    "d = max(1, round(0.02 * diagonal)) unless boundary_kernel K is set (d = (K - 1) / 2), per class over the "
    "dataset, mean over classes with GT pixels; boundary pixels where GT is 255 are left out",
    "confusion_matrix": "rows = GT class, columns = predicted class, last column = predicted 255",
}

"""Slow, literal re-implementations of the metrics, written independently of pseudolabel.evaluate.metrics.

Used only by tests: every figure of ``pseudolabel score`` is checked against these.
"""

from __future__ import annotations

import math

import numpy as np


def literal_boundary(mask: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    """Cheng et al.'s procedure step by step: zero-pad by 1, erode with a 3x3 kernel d times
    (pixels beyond the padded image do not erode), crop, subtract."""
    height, width = mask.shape
    d = max(1, round(ratio * math.sqrt(height**2 + width**2)))
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    for _ in range(d):
        grown = np.pad(padded, 1, constant_values=True)
        eroded = np.ones_like(padded)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                eroded &= grown[dy : dy + height + 2, dx : dx + width + 2]
        padded = eroded
    return mask & ~padded[1:-1, 1:-1]


def reference_scores(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict[str, object]:
    """Per-pixel loops over every pair; returns the same keys as pseudolabel.evaluate.metrics.summarize."""
    tp = [0] * num_classes
    fp = [0] * num_classes
    gt_count = [0] * num_classes
    confident_gt = [0] * num_classes
    valid = confident = 0
    b_inter = [0] * num_classes
    b_union = [0] * num_classes
    for gt, pred in pairs:
        for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
            if g == 255:
                continue
            valid += 1
            gt_count[g] += 1
            if p == 255:
                continue
            confident += 1
            confident_gt[g] += 1
            if p == g:
                tp[g] += 1
            else:
                fp[p] += 1
        for c in range(num_classes):
            gt_edge = literal_boundary(gt == c)
            pred_edge = literal_boundary(pred == c)
            keep = gt != 255
            b_inter[c] += int((gt_edge & pred_edge & keep).sum())
            b_union[c] += int(((gt_edge | pred_edge) & keep).sum())
    iou = [tp[c] / (gt_count[c] + fp[c]) if gt_count[c] else None for c in range(num_classes)]
    iou_conf = [tp[c] / (confident_gt[c] + fp[c]) if confident_gt[c] else None for c in range(num_classes)]
    biou = [b_inter[c] / b_union[c] if gt_count[c] and b_union[c] else None for c in range(num_classes)]

    def mean(values: list[float | None]) -> float:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept)

    return {
        "miou": mean(iou),
        "iou": iou,
        "miou_confident": mean(iou_conf),
        "mbiou": mean(biou),
        "biou": biou,
        "coverage": confident / valid,
        "pixel_accuracy": sum(tp) / valid,
    }

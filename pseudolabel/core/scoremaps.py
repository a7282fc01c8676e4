"""The one type every stage reads and writes: per-class score maps at image resolution, with the
pixels a stage has marked unsure."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from pseudolabel.core.errors import MaskError
from pseudolabel.core.files import atomic_write_bytes
from pseudolabel.core.masks import IGNORE_INDEX

DEFAULT_LABEL_CONFIDENCE = 0.7
"""Probability a hard label's class gets when a label map becomes scores."""
DEFAULT_UNSURE_MARGIN = 0.05
"""``generate``: pixels whose two best scores are closer than this are unsure (255)."""


@dataclass(frozen=True)
class ScoreMaps:
    """Scores of background and an image's candidate classes.

    Attributes:
        scores: float32 [K + 1, H, W]; channel 0 is background.
        class_ids: dataset class id of each channel; ``class_ids[0] == 0``.
        unsure: bool [H, W], pixels decoded as 255 whatever their scores (None: none).
    """

    scores: np.ndarray
    class_ids: tuple[int, ...]
    unsure: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.scores.ndim != 3 or self.scores.shape[0] != len(self.class_ids) or self.class_ids[0] != 0:
            raise ValueError(f"scores {self.scores.shape} do not fit class ids {self.class_ids}")
        if self.unsure is not None and self.unsure.shape != self.scores.shape[1:]:
            raise ValueError(f"unsure mask {self.unsure.shape} does not fit scores {self.scores.shape}")


def decode(maps: ScoreMaps, unsure_margin: float = 0.0, min_score: float | None = None) -> np.ndarray:
    """Label map from scores: the best channel's class id; 255 where ``maps.unsure``, where the
    best two are closer than ``unsure_margin``, or where the best score is below ``min_score``.

    Returns:
        uint8 [H, W].
    """
    labels = np.asarray(maps.class_ids, dtype=np.uint8)[maps.scores.argmax(axis=0)]
    labels[unsure_pixels(maps, unsure_margin, min_score)] = IGNORE_INDEX
    return labels


def unsure_pixels(maps: ScoreMaps, unsure_margin: float = 0.0, min_score: float | None = None) -> np.ndarray:
    """bool [H, W]: ``maps.unsure``, or best two scores closer than the margin, or best below ``min_score``."""
    scores = maps.scores
    unsure = np.zeros(scores.shape[1:], dtype=bool) if maps.unsure is None else maps.unsure.copy()
    if unsure_margin > 0 and scores.shape[0] > 1:
        best, second = best_two(scores)
        unsure |= (best - second) < unsure_margin
    if min_score is not None:
        unsure |= scores.max(axis=0) < min_score
    return unsure


def best_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest and second-largest value of each pixel over the channels of [C, H, W], C >= 2
    (a tie gives the same value twice): one pass per channel, where ``np.partition`` along the
    channel axis took 12 ms for a 375 x 500 image of 2 channels on a 2-core Xeon."""
    best = np.maximum(scores[0], scores[1])
    second = np.minimum(scores[0], scores[1])
    for channel in scores[2:]:
        np.maximum(second, np.minimum(best, channel), out=second)
        np.maximum(best, channel, out=best)
    return best, second


def mark_unsure(maps: ScoreMaps, unsure_margin: float = 0.0, min_score: float | None = None) -> ScoreMaps:
    """The same scores with the :func:`unsure_pixels` rule's pixels marked unsure."""
    return replace(maps, unsure=unsure_pixels(maps, unsure_margin, min_score))


def from_label_map(
    label_map: np.ndarray, class_ids: tuple[int, ...], confidence: float = DEFAULT_LABEL_CONFIDENCE
) -> ScoreMaps:
    """Soft scores from a hard label map.

    Args:
        label_map: uint8 [H, W] class ids, 255 = unknown.
        class_ids: the channels, background first; every non-255 label must be among them.
        confidence: probability of the labelled class; the rest is shared by the other classes.

    Returns:
        ScoreMaps with float32 [C, H, W] summing to 1 per pixel; 255 pixels are uniform and unsure.
    """
    count = len(class_ids)
    other = (1.0 - confidence) / max(count - 1, 1)
    scores = np.full((count, *label_map.shape), other, dtype=np.float32)
    for channel, class_id in enumerate(class_ids):
        scores[channel][label_map == class_id] = confidence
    unknown = label_map == IGNORE_INDEX
    scores[:, unknown] = 1.0 / count
    return ScoreMaps(scores, class_ids, unknown)


def relabel(maps: ScoreMaps, label_map: np.ndarray, confidence: float = DEFAULT_LABEL_CONFIDENCE) -> ScoreMaps:
    """Scores that decode to ``label_map``: a pixel whose label differs from its best channel gets
    the hard-label scores of :func:`from_label_map`; others, and 255 pixels, keep theirs.

    Args:
        label_map: uint8 [H, W] of classes among ``maps.class_ids`` or 255 (becomes unsure).
    """
    best = np.asarray(maps.class_ids, dtype=np.uint8)[maps.scores.argmax(axis=0)]
    changed = (label_map != best) & (label_map != IGNORE_INDEX)
    scores = maps.scores.copy()
    scores[:, changed] = from_label_map(label_map, maps.class_ids, confidence).scores[:, changed]
    return ScoreMaps(scores, maps.class_ids, label_map == IGNORE_INDEX)


def resize_maps(maps: ScoreMaps, height: int, width: int) -> ScoreMaps:
    """``maps`` at [H, W]: scores bilinearly (pixel centres aligned), the unsure mask nearest."""
    size = (width, height)
    scores = np.stack([cv2.resize(channel, size, interpolation=cv2.INTER_LINEAR) for channel in maps.scores])
    unsure = None
    if maps.unsure is not None:
        unsure = cv2.resize(maps.unsure.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return ScoreMaps(scores.astype(np.float32, copy=False), maps.class_ids, unsure)


def save_scores(path: str | os.PathLike[str], maps: ScoreMaps) -> None:
    """Write ``scores`` (float16 [K + 1, H, W]) and ``classes`` (int [K + 1]) to an .npz, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, scores=maps.scores.astype(np.float16), classes=np.asarray(maps.class_ids, np.int32))
    atomic_write_bytes(path, buffer.getvalue())


def load_scores(path: str | os.PathLike[str]) -> ScoreMaps:
    """Read an .npz written by :func:`save_scores` (scores as float32)."""
    try:
        with np.load(Path(path)) as data:
            return ScoreMaps(data["scores"].astype(np.float32), tuple(int(c) for c in data["classes"]))
    except (OSError, KeyError, ValueError) as error:
        raise MaskError(f"cannot read scores {path}: {error}") from error

"""The one type every stage reads and writes: per-class score maps at image resolution."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.errors import MaskError
from pseudolabel.files import atomic_write_bytes
from pseudolabel.masks import IGNORE_INDEX


@dataclass(frozen=True)
class ScoreMaps:
    """Scores of background and an image's candidate classes.

    Attributes:
        scores: float32 [K + 1, H, W]; channel 0 is background.
        class_ids: dataset class id of each channel; ``class_ids[0] == 0``.
    """

    scores: np.ndarray
    class_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.scores.ndim != 3 or self.scores.shape[0] != len(self.class_ids) or self.class_ids[0] != 0:
            raise ValueError(f"scores {self.scores.shape} do not fit class ids {self.class_ids}")


def decode(maps: ScoreMaps, unsure_margin: float = 0.0, min_score: float | None = None) -> np.ndarray:
    """Label map from scores: the best channel's class id; 255 where the best two are closer than
    ``unsure_margin``, or where the best score is below ``min_score``.

    Returns:
        uint8 [H, W].
    """
    scores = maps.scores
    lookup = np.asarray(maps.class_ids, dtype=np.uint8)
    best = scores.argmax(axis=0)
    labels = lookup[best]
    if unsure_margin > 0 and scores.shape[0] > 1:
        top_two = np.partition(scores, scores.shape[0] - 2, axis=0)[-2:]
        labels[(top_two[1] - top_two[0]) < unsure_margin] = IGNORE_INDEX
    if min_score is not None:
        labels[scores.max(axis=0) < min_score] = IGNORE_INDEX
    return labels


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

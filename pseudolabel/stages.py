"""How stages compose into the per-image function a run applies.

* ``generate``: a labeler's ScoreMaps -> decode -> optional refiner.
* ``refine``: an existing mask (any tool's palette PNG) or saved soft scores -> refiner.

A refiner is ``(rgb uint8 [H, W, 3], scores, labels uint8 [H, W]) -> (labels, manifest fields)``:
DenseCRF works on the scores, SAM on the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.datasets.base import Sample
from pseudolabel.errors import MaskError
from pseudolabel.masks import mask_class_ids, read_mask
from pseudolabel.pipeline import Labelled
from pseudolabel.refiners.crf import scores_from_labels
from pseudolabel.scoremaps import ScoreMaps, decode, load_scores

Refiner = Callable[[np.ndarray, ScoreMaps, np.ndarray], tuple[np.ndarray, dict[str, Any]]]
Scorer = Callable[[Sample], tuple[ScoreMaps, dict[str, Any]]]


@dataclass
class ScoreThenDecode:
    """Scores from a labeler, decoded with ``unsure_margin``, then refined when a refiner is given."""

    scorer: Scorer
    unsure_margin: float
    refiner: Refiner | None = None

    def __call__(self, sample: Sample) -> Labelled:
        maps, record = self.scorer(sample)
        labels = decode(maps, self.unsure_margin)
        if self.refiner is not None:
            labels, extra = self.refiner(sample.rgb, maps, labels)
            record = {**record, **extra}
        return Labelled(labels, maps, record)


@dataclass(frozen=True)
class StoredMaskRefine:
    """Refine ``masks_dir/<id>.png``, starting from ``scores_dir/<id>.npz`` when that exists.

    A hard mask becomes scores with ``label_confidence`` for its label; 255 is unknown (uniform
    over the classes), never a class. Classes are background, the image's labels and any class
    the mask holds.
    """

    masks_dir: Path
    scores_dir: Path | None
    refiner: Refiner
    num_classes: int
    label_confidence: float = 0.7

    def __call__(self, sample: Sample) -> Labelled:
        height, width = sample.rgb.shape[:2]
        path = self.masks_dir / f"{sample.image_id}.png"
        if not path.is_file():
            raise MaskError(f"no input mask for {sample.image_id}: {path} does not exist")
        labels = read_mask(path)
        if labels.shape != (height, width):
            raise MaskError(
                f"mask {path} is {labels.shape[1]}x{labels.shape[0]} but its image is {width}x{height} (width x height)"
            )
        present = mask_class_ids(labels, self.num_classes, path)
        scores_path = self.scores_dir / f"{sample.image_id}.npz" if self.scores_dir else None
        if scores_path is not None and scores_path.is_file():
            maps = load_scores(scores_path)
            if maps.scores.shape[1:] != (height, width):
                raise MaskError(f"scores {scores_path} are {maps.scores.shape[1:]} but the image is {(height, width)}")
            source = "scores"
        else:
            class_ids = tuple(sorted({0, *sample.labels, *present}))
            maps = scores_from_labels(labels, class_ids, self.label_confidence)
            source = "mask"
        refined, record = self.refiner(sample.rgb, maps, labels)
        return Labelled(refined, None, {"input": source, **record})

"""How stages compose into the per-image function a run applies; every stage passes ScoreMaps on.

* ``generate``: Scorer (a labeler, with its region filter) -> unsure margin -> Refiner* -> decode.
* ``refine``: an existing mask (any tool's palette PNG), or saved soft scores, -> Refiner* -> decode.

A Scorer is ``(sample, record) -> ScoreMaps``; a Refiner is ``(rgb uint8 [H, W, 3], ScoreMaps,
record) -> ScoreMaps``, so refiners chain in any order. Stages write manifest fields and summary
tallies into the image's :class:`~pseudolabel.core.stage_record.StageRecord`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pseudolabel.core.errors import MaskError
from pseudolabel.core.images import downscale
from pseudolabel.core.instances import resize_instances
from pseudolabel.core.masks import mask_class_ids, read_mask
from pseudolabel.core.safe_paths import id_path
from pseudolabel.core.scoremaps import (
    DEFAULT_LABEL_CONFIDENCE,
    ScoreMaps,
    decode,
    from_label_map,
    load_scores,
    mark_unsure,
    relabel,
    resize_maps,
)
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Sample
from pseudolabel.runner.loop import ImageResult

Scorer = Callable[[Sample, StageRecord], ScoreMaps]
Refiner = Callable[[np.ndarray, ScoreMaps, StageRecord], ScoreMaps]
ImagePreparer = Callable[[list[np.ndarray]], None]
"""Work done once for a batch of images (uint8 [H, W, 3] each) before each is labelled alone:
SAM's image encoder over the batch (:meth:`~pseudolabel.models.sam.SamPrompter.embed_batch`)."""


class BatchPreparing:
    """An image function that may prepare a batch of samples at once (``prepare_images``)."""

    prepare_images: ImagePreparer | None

    def prepare_batch(self, samples: Sequence[Sample]) -> None:
        """Run ``prepare_images`` on the samples' images (nothing when there is none)."""
        if self.prepare_images is not None:
            self.prepare_images([sample.rgb for sample in samples])


def apply_refiners(rgb: np.ndarray, maps: ScoreMaps, refiners: Sequence[Refiner], record: StageRecord) -> ScoreMaps:
    """``maps`` through each refiner in turn."""
    for refiner in refiners:
        maps = refiner(rgb, maps, record)
    return maps


@dataclass
class ScoreRefineDecode(BatchPreparing):
    """The ``generate`` image function: scores, pixels closer than ``unsure_margin`` marked unsure,
    refiners in order, one decode. The scorer's own maps are what ``--save-scores`` keeps.

    An image whose longer side is over ``max_side`` pixels is scored downscaled to it; its scores
    (and a labeler's instances) are resized back, so refiners and outputs keep the image's size.
    """

    scorer: Scorer
    unsure_margin: float
    refiners: Sequence[Refiner] = ()
    max_side: int | None = None
    prepare_images: ImagePreparer | None = None

    def __call__(self, sample: Sample) -> ImageResult:
        record = StageRecord()
        maps = self._score(sample, record)
        refined = apply_refiners(sample.rgb, mark_unsure(maps, self.unsure_margin), self.refiners, record)
        return ImageResult(decode(refined), maps, record)

    def _score(self, sample: Sample, record: StageRecord) -> ScoreMaps:
        """The scorer's maps at the image's size; records ``model_input`` [w, h] when downscaled."""
        small = downscale(sample.rgb, self.max_side) if self.max_side else sample.rgb
        if small is sample.rgb:
            return self.scorer(sample, record)
        height, width = sample.rgb.shape[:2]
        record["model_input"] = [small.shape[1], small.shape[0]]
        maps = self.scorer(replace(sample, rgb=small), record)
        instances = record.extras.get("instances")
        if instances is not None:
            record.extras["instances"] = resize_instances(instances, height, width)
        return resize_maps(maps, height, width)


@dataclass(frozen=True)
class StoredMaskRefine(BatchPreparing):
    """The ``refine`` image function: refine ``masks_dir/<id>.png``, starting from
    ``scores_dir/<id>.npz`` when that exists.

    A hard mask becomes scores with ``label_confidence`` for its label; 255 is unknown (uniform
    over the classes) and unsure, never a class. Classes are background, the image's labels and any
    class the mask holds. With saved scores, the mask decides where it disagrees with their best
    class (255 pixels keep their scores and stay unsure), so the first refiner sees the mask.
    """

    masks_dir: Path
    scores_dir: Path | None
    refiners: Sequence[Refiner]
    num_classes: int
    label_confidence: float = DEFAULT_LABEL_CONFIDENCE
    prepare_images: ImagePreparer | None = None

    def __call__(self, sample: Sample) -> ImageResult:
        record = StageRecord()
        maps, record["input"] = self._input(sample)
        return ImageResult(decode(apply_refiners(sample.rgb, maps, self.refiners, record)), None, record)

    def _input(self, sample: Sample) -> tuple[ScoreMaps, str]:
        """The stored scores (``"scores"``) or the mask's (``"mask"``) as ScoreMaps."""
        height, width = sample.rgb.shape[:2]
        label_map, path = read_stored_mask(self.masks_dir, sample)
        present = mask_class_ids(label_map, self.num_classes, path)
        scores_path = id_path(self.scores_dir, sample.image_id, ".npz") if self.scores_dir else None
        if scores_path is None or not scores_path.is_file():
            class_ids = tuple(sorted({0, *sample.classes, *present}))
            return from_label_map(label_map, class_ids, self.label_confidence), "mask"
        maps = load_scores(scores_path)
        if maps.scores.shape[1:] != (height, width):
            raise MaskError(f"scores {scores_path} are {maps.scores.shape[1:]} but the image is {(height, width)}")
        missing = set(present) - set(maps.class_ids)
        if missing:
            raise MaskError(f"mask {path} holds classes {sorted(missing)} that scores {scores_path} lack")
        return relabel(maps, label_map, self.label_confidence), "scores"


def read_stored_mask(masks_dir: Path, sample: Sample) -> tuple[np.ndarray, Path]:
    """``masks_dir/<id>.png`` of a sample, checked to have the image's size: (uint8 [H, W], path)."""
    height, width = sample.rgb.shape[:2]
    path = id_path(masks_dir, sample.image_id, ".png")
    if not path.is_file():
        raise MaskError(f"no input mask for {sample.image_id}: {path} does not exist")
    label_map = read_mask(path)
    if label_map.shape != (height, width):
        raise MaskError(
            f"mask {path} is {label_map.shape[1]}x{label_map.shape[0]} but its image is {width}x{height} "
            "(width x height)"
        )
    return label_map, path


@dataclass(frozen=True)
class OverlayPicture:
    """The ``overlay`` image function: the picture of ``masks_dir/<id>.png`` over its image, with
    the GT and an error map when the dataset has a GT mask and ``with_gt`` (picklable)."""

    masks_dir: Path
    class_names: list[str]
    with_gt: bool = True
    max_side: int = 512

    def __call__(self, sample: Sample) -> ImageResult:
        from pseudolabel.evaluate.overlay import render_panel

        label_map, _ = read_stored_mask(self.masks_dir, sample)
        gt = read_mask(sample.gt_path) if self.with_gt and sample.gt_path is not None else None
        if gt is not None and gt.shape != label_map.shape:
            raise MaskError(f"GT {sample.gt_path} is {gt.shape[::-1]} but the image is {label_map.shape[::-1]}")
        record = StageRecord(gt=gt is not None)
        with record.timed("render_s"):
            picture = render_panel(sample.rgb, label_map, gt, self.class_names, self.max_side)
        return ImageResult(None, None, record, picture=picture)

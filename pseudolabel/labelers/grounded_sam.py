"""The ``grounded-sam`` labeler: Grounding DINO boxes for the image's classes, SAM masks from those
boxes, merged into ScoreMaps by confidence.

Per image:

1. **Detect**, with one of two caption modes:

   * ``joint`` (default, one detector pass): one caption ``"cat . dog ."`` holds all candidate
     classes; each class owns the caption tokens of its name. A query's class probability is
     the highest token probability (sigmoid of the logit) inside that class's span. A query is
     a box when its best class is above ``box_threshold``; it is a detection of every class
     above ``text_threshold`` (the reference maps the thresholded phrase back to a class by
     substring matching, which confuses "car" and "cart"; spans cannot).
   * ``per-class`` (as SAM_WSSS ran it for the survey's 86.4): one pass per class with the
     caption ``"name."``; a query is a box of that class when its highest probability over
     ALL caption tokens (special tokens and the period included) is above ``box_threshold``,
     and that maximum is its score. ``text_threshold`` plays no part (the reference only builds
     phrases from it and discards them).

   Both compare strictly (``>``) and leave boxes unclipped, as groundingdino-py does. Per-class
   NMS then removes duplicates (``nms_threshold`` 1 keeps every box, as the reference does).
2. **Segment**: every distinct kept box prompts SAM in one batched call per image (one image
   embedding, single-mask output).
   With ``--synonyms pole`` each class's detected region (the union of its masks) then picks
   the closest of the class's candidate names (POLE), and steps 1-2 run again with the chosen
   names when any changed (the image embedding is reused).
3. **Exclude** (optional): ELSE-style, each mask is a region; a mask whose class is impossible
   there is dropped.
4. **Merge**: confidence = box score x SAM's predicted IoU. Channel c holds, per pixel, the best
   confidence of class c's masks covering it; background is 1 where no mask covers the pixel and
   0 elsewhere. Decoding takes the most confident class, so overlaps go to the more confident
   mask (not to the higher class index as in the reference), and ``--unsure-margin`` marks
   pixels whose two best classes are closer than the margin as 255.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from pseudolabel.core.prompts import PromptSet
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.detection import detect
from pseudolabel.labelers.exclusion import ClassExclusion
from pseudolabel.labelers.instance_labeler import (
    InstanceLabeler,
    InstanceLabelerOptions,
    Segments,
    clip_and_exclusion,
)
from pseudolabel.labelers.options import (
    CAPTION_MODES,
    SYNONYM_MODES,
    DetectorOptions,
)
from pseudolabel.models.clip import ClipModel
from pseudolabel.models.grounding import GroundingDino

if TYPE_CHECKING:
    from pseudolabel.registry import ModelHub
    from pseudolabel.settings import LabelerSettings


@dataclass(frozen=True)
class GroundedSamOptions(InstanceLabelerOptions):
    """The detector's thresholds and caption mode (``detector``), beside prompts, exclusion and
    zero-shot candidates (:class:`~pseudolabel.labelers.instance_labeler.InstanceLabelerOptions`)."""

    detector: DetectorOptions = field(default_factory=DetectorOptions)


class BoxMaskPredictor(Protocol):
    """What the labeler needs from SAM (:class:`~pseudolabel.models.sam.SamPrompter`; a fake can
    stand in for tests)."""

    def set_image(self, rgb: np.ndarray) -> None: ...

    def predict_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per box: (bool [N, H, W], predicted IoU [N]) for x0, y0, x1, y1 pixel boxes [N, 4]."""
        ...


class GroundedSamLabeler(InstanceLabeler):
    """Scorer: Sample -> ScoreMaps with Grounding DINO + SAM; models are built once and reused."""

    def __init__(
        self,
        detector: GroundingDino,
        sam: BoxMaskPredictor,
        prompts: PromptSet,
        options: GroundedSamOptions | None = None,
        clip: ClipModel | None = None,
        exclusion: ClassExclusion | None = None,
    ) -> None:
        """``clip`` is needed for zero-shot candidates, POLE and exclusion; ``exclusion`` replaces the
        default plain-CLIP exclusion (e.g. a CLIPN-based one)."""
        options = options or GroundedSamOptions()
        if options.detector.captions not in CAPTION_MODES:
            raise ValueError(f"grounded-sam captions must be one of {CAPTION_MODES}")
        super().__init__(prompts, options, SYNONYM_MODES, clip, exclusion)
        self.detector = detector
        self.sam = sam

    def _segment(self, sample: Sample, names: list[str], record: StageRecord) -> Segments:
        """Detect ``names`` and segment every distinct box (one image embedding per image)."""
        height, width = sample.rgb.shape[:2]
        with record.timed("detector_s"):
            found = detect(self.detector, sample.rgb, names, self.options.detector)
        record["detections"] = len(found.scores)
        if not len(found.scores):
            return Segments(torch.zeros(0, height, width, dtype=torch.bool), torch.zeros(0), found.classes + 1)
        with record.timed("sam_s"):
            unique_queries, box_of = found.queries.unique(return_inverse=True)
            first = torch.zeros(len(unique_queries), dtype=torch.long)
            first.scatter_(0, box_of.cpu(), torch.arange(len(box_of)))
            self.sam.set_image(sample.rgb)
            query_masks, query_ious = self.sam.predict_boxes(found.boxes[first.to(found.boxes.device)])
            box_of = box_of.to(query_masks.device)
            confidences = found.scores.to(query_masks.device) * query_ious[box_of]
        return Segments(query_masks[box_of], confidences, (found.classes + 1).to(query_masks.device))


def build(hub: ModelHub, prompts: PromptSet, settings: LabelerSettings, options: DetectorOptions) -> GroundedSamLabeler:
    """Grounding DINO + SAM; CLIP only when zero-shot, POLE or exclusion need it."""
    labeler_options = GroundedSamOptions(
        prompting=settings.prompting, exclusion=settings.exclusion, zero_shot=settings.zero_shot, detector=options
    )
    clip, exclusion = clip_and_exclusion(hub, prompts, settings, labeler_options)
    return GroundedSamLabeler(hub.grounding_dino(), hub.sam(), prompts, labeler_options, clip, exclusion)

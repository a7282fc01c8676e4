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

from pseudolabel.core.instances import Instances
from pseudolabel.core.prompts import PromptSet
from pseudolabel.core.scoremaps import ScoreMaps
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.detection import detect
from pseudolabel.labelers.exclusion import ClassExclusion, Regions, exclusion_for
from pseudolabel.labelers.options import (
    CAPTION_MODES,
    SYNONYM_MODES,
    DetectorOptions,
    ExclusionOptions,
    PromptingOptions,
    ZeroShotOptions,
)
from pseudolabel.labelers.pole import choose_and_record
from pseudolabel.labelers.zero_shot import zero_shot_classes
from pseudolabel.models.clip import ClipModel
from pseudolabel.models.grounding import GroundingDino
from pseudolabel.models.sam import merge_by_confidence

if TYPE_CHECKING:
    from pseudolabel.registry import ModelHub
    from pseudolabel.settings import LabelerSettings


@dataclass(frozen=True)
class GroundedSamOptions:
    """Detector settings, prompts and the optional exclusion / zero-shot steps.

    Attributes:
        detector: thresholds and caption mode.
        prompting: ``none`` (default), ``fuse``, ``detector`` (SAM_WSSS's renamed VOC classes)
            or ``pole`` (per image and class, the candidate name closest to the class's detected
            region; detection runs again with the chosen names).
        exclusion: drop SAM masks whose class ELSE-style exclusion finds impossible there.
        zero_shot: candidates from CLIP instead of the image's labels.
    """

    detector: DetectorOptions = field(default_factory=DetectorOptions)
    prompting: PromptingOptions = field(default_factory=PromptingOptions)
    exclusion: ExclusionOptions = field(default_factory=ExclusionOptions)
    zero_shot: ZeroShotOptions = field(default_factory=ZeroShotOptions)

    @property
    def needs_clip(self) -> bool:
        """Zero-shot candidates, POLE and exclusion need a CLIP model beside the detector."""
        return self.zero_shot.enabled or self.prompting.synonyms == "pole" or self.exclusion.enabled


class BoxMaskPredictor(Protocol):
    """What the labeler needs from SAM (:class:`~pseudolabel.models.sam.SamPrompter`; a fake can
    stand in for tests)."""

    def set_image(self, rgb: np.ndarray) -> None: ...

    def predict_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per box: (bool [N, H, W], predicted IoU [N]) for x0, y0, x1, y1 pixel boxes [N, 4]."""
        ...


@dataclass(frozen=True)
class Segments:
    """SAM masks of one image: bool [N, H, W], confidence (box score x SAM IoU) [N], channel
    (1 + index into the image's classes) [N]."""

    masks: torch.Tensor
    confidences: torch.Tensor
    channels: torch.Tensor

    def select(self, kept: torch.Tensor) -> Segments:
        """The segments where bool [N] ``kept`` is true."""
        return Segments(self.masks[kept], self.confidences[kept], self.channels[kept])


class GroundedSamLabeler:
    """Scorer: Sample -> ScoreMaps with Grounding DINO + SAM; models are built once and reused."""

    def __init__(
        self,
        detector: GroundingDino,
        sam: BoxMaskPredictor,
        prompts: PromptSet,
        options: GroundedSamOptions | None = None,
        clip: ClipModel | None = None,
        exclusion: ClassExclusion | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        """``clip`` is needed for zero-shot candidates, POLE and exclusion; ``exclusion`` replaces the
        default plain-CLIP exclusion (e.g. a CLIPN-based one)."""
        self.detector = detector
        self.sam = sam
        self.prompts = prompts
        self.options = options or GroundedSamOptions()
        self.synonyms = self.options.prompting.resolved("none", SYNONYM_MODES)
        if self.options.detector.captions not in CAPTION_MODES:
            raise ValueError(f"grounded-sam captions must be one of {CAPTION_MODES}")
        if self.options.needs_clip and clip is None:
            raise ValueError("zero-shot candidates, POLE and exclusion need a CLIP model")
        self.clip = clip
        self.exclusion = exclusion
        if self.options.exclusion.enabled and exclusion is None:
            self.exclusion = ClassExclusion(clip, prompts, self.options.exclusion.threshold)
        self.autocast_dtype = autocast_dtype

    def __call__(self, sample: Sample, record: StageRecord) -> ScoreMaps:
        """Score maps [bg, classes...] of the sample; records stage seconds, detections, exclusions."""
        height, width = sample.rgb.shape[:2]
        class_ids = list(sample.classes)
        zero_shot = self.options.zero_shot
        if zero_shot.enabled:
            class_ids, record["candidates"] = zero_shot_classes(
                self.clip, sample.rgb, self.prompts, zero_shot.top_k, zero_shot.min_probability
            )
            record["classes"] = [self.prompts.classes[c].name for c in class_ids]
        if not class_ids:
            record["detections"] = 0
            return ScoreMaps(np.ones((1, height, width), dtype=np.float32), (0,))
        names = self._names(class_ids)
        segments = self._segment(sample, names, record)
        if self.synonyms == "pole":
            with record.timed("pole_s"):
                names = self._pole_names(sample, class_ids, segments, record)
            if names != self._names(class_ids):
                segments = self._segment(sample, names, record)
        if self.options.exclusion.enabled and len(segments.masks):
            segments = self._exclude(sample, class_ids, segments, record)
        with record.timed("merge_s"):
            scores = merge_by_confidence(segments.masks, segments.confidences, segments.channels, len(class_ids) + 1)
        instance_classes = np.asarray([class_ids[c - 1] for c in segments.channels.tolist()], dtype=np.int64)
        record.extras["instances"] = Instances(
            segments.masks.cpu().numpy(), instance_classes, segments.confidences.float().cpu().numpy()
        )
        return ScoreMaps(scores.cpu().numpy(), (0, *class_ids))

    def _names(self, class_ids: list[int]) -> list[str]:
        return self.prompts.prompt_names(class_ids, self.synonyms)

    def _segment(self, sample: Sample, names: list[str], record: StageRecord) -> Segments:
        """Detect ``names`` and segment every distinct box (one image embedding per image)."""
        height, width = sample.rgb.shape[:2]
        with record.timed("detector_s"):
            found = detect(self.detector, sample.rgb, names, self.options.detector, self.autocast_dtype)
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

    def _pole_names(self, sample: Sample, class_ids: list[int], segments: Segments, record: StageRecord) -> list[str]:
        """POLE on detected regions: per class, the candidate name closest to the image masked by the
        union of that class's masks (the whole image when the class name found nothing)."""
        height, width = sample.rgb.shape[:2]
        regions = torch.ones(len(class_ids), height, width, device=self.clip.device)
        for channel in segments.channels.unique().tolist():
            regions[channel - 1] = segments.masks[segments.channels == channel].any(dim=0).float().to(regions.device)
        count = self.options.prompting.pole_candidates
        return choose_and_record(self.clip, sample.rgb, regions, self.prompts, class_ids, count, record)

    def _exclude(self, sample: Sample, class_ids: list[int], segments: Segments, record: StageRecord) -> Segments:
        """Each mask is a region claiming its class; drop those exclusion rejects."""
        region_classes = [class_ids[c - 1] for c in segments.channels.tolist()]
        names = [f"mask {i} ({self.prompts.classes[c].name})" for i, c in enumerate(region_classes)]
        regions = Regions(segments.masks.float(), region_classes, names, crop=True)
        kept = self.exclusion.filter(sample.rgb, regions, class_ids, record)
        return segments.select(torch.tensor(kept, device=segments.masks.device))


def build(hub: ModelHub, prompts: PromptSet, settings: LabelerSettings, options: DetectorOptions) -> GroundedSamLabeler:
    """Grounding DINO + SAM; CLIP only when zero-shot, POLE or exclusion need it."""
    labeler_options = GroundedSamOptions(options, settings.prompting, settings.exclusion, settings.zero_shot)
    clip, exclusion = exclusion_for(hub, prompts, settings)
    if clip is None and labeler_options.needs_clip:
        clip = hub.clip()
    detector = hub.grounding_dino()
    return GroundedSamLabeler(
        detector, hub.sam(), prompts, labeler_options, clip, exclusion, hub.settings.autocast_dtype
    )

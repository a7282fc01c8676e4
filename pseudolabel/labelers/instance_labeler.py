"""What both instance labelers (Grounded-SAM, SAM 3) share: an image's classes (its labels or
CLIP's zero-shot candidates) become prompts, the labeler's model segments them into instances with
a confidence each, POLE may rename a class from its instances' region and segment again, ELSE-style
exclusion may drop instances, and the instances merge into ScoreMaps by confidence.

Merge: channel c holds, per pixel, the best confidence of class c's masks covering it; background
is 1 where no mask covers the pixel and 0 elsewhere. Decoding takes the most confident class, so
overlaps go to the more confident mask, and ``--unsure-margin`` marks pixels whose two best classes
are closer than the margin as 255.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from pseudolabel.core.instances import Instances
from pseudolabel.core.prompts import PromptSet
from pseudolabel.core.scoremaps import ScoreMaps
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.exclusion import ClassExclusion, Regions, exclusion_for
from pseudolabel.labelers.options import ExclusionOptions, PromptingOptions, ZeroShotOptions
from pseudolabel.labelers.pole import choose_and_record
from pseudolabel.labelers.zero_shot import zero_shot_classes
from pseudolabel.models.clip import ClipModel
from pseudolabel.models.sam import merge_by_confidence

if TYPE_CHECKING:
    from pseudolabel.registry import ModelHub
    from pseudolabel.settings import LabelerSettings


@dataclass(frozen=True)
class InstanceLabelerOptions:
    """The options every instance labeler takes; a labeler's own options extend these.

    Attributes:
        prompting: ``none`` (default), ``fuse``, ``detector`` (SAM_WSSS's renamed VOC classes)
            or ``pole`` (per image and class, the candidate name closest to the class's
            instances; segmentation runs again with the chosen names).
        exclusion: drop instances whose class ELSE-style exclusion finds impossible there.
        zero_shot: candidates from CLIP instead of the image's labels.
    """

    prompting: PromptingOptions = field(default_factory=PromptingOptions)
    exclusion: ExclusionOptions = field(default_factory=ExclusionOptions)
    zero_shot: ZeroShotOptions = field(default_factory=ZeroShotOptions)

    @property
    def needs_clip(self) -> bool:
        """Zero-shot candidates, POLE and exclusion need a CLIP model beside the labeler's own."""
        return self.zero_shot.enabled or self.prompting.synonyms == "pole" or self.exclusion.enabled


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


def clip_and_exclusion(
    hub: ModelHub, prompts: PromptSet, settings: LabelerSettings, options: InstanceLabelerOptions
) -> tuple[ClipModel | None, ClassExclusion | None]:
    """The CLIP an instance labeler needs (a CLIPN exclusion's own, else the run's when zero-shot
    candidates, POLE or exclusion ask for one, else None) and a CLIPN exclusion (else None)."""
    clip, exclusion = exclusion_for(hub, prompts, settings)
    if clip is None and options.needs_clip:
        clip = hub.clip()
    return clip, exclusion


class InstanceLabeler:
    """Scorer: Sample -> ScoreMaps from a model's instances; subclasses say how names become
    :class:`Segments` (``_segment``)."""

    def __init__(
        self,
        prompts: PromptSet,
        options: InstanceLabelerOptions,
        synonym_modes: tuple[str, ...],
        clip: ClipModel | None = None,
        exclusion: ClassExclusion | None = None,
    ) -> None:
        """``clip`` is needed for zero-shot candidates, POLE and exclusion; ``exclusion`` replaces the
        default plain-CLIP exclusion (e.g. a CLIPN-based one)."""
        self.prompts = prompts
        self.options = options
        self.synonyms = options.prompting.resolved("none", synonym_modes)
        if options.needs_clip and clip is None:
            raise ValueError("zero-shot candidates, POLE and exclusion need a CLIP model")
        self.clip = clip
        self.exclusion = exclusion
        if options.exclusion.enabled and exclusion is None:
            self.exclusion = ClassExclusion(clip, prompts, options.exclusion.threshold)

    def __call__(self, sample: Sample, record: StageRecord) -> ScoreMaps:
        """Score maps [bg, classes...] of the sample; records stage seconds, detections, exclusions."""
        height, width = sample.rgb.shape[:2]
        class_ids = self._candidates(sample, record)
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

    def _candidates(self, sample: Sample, record: StageRecord) -> list[int]:
        """The classes to segment: the image's labels, or CLIP's zero-shot candidates (recorded)."""
        zero_shot = self.options.zero_shot
        if not zero_shot.enabled:
            return list(sample.classes)
        class_ids, record["candidates"] = zero_shot_classes(
            self.clip, sample.rgb, self.prompts, zero_shot.top_k, zero_shot.min_probability
        )
        record["classes"] = [self.prompts.classes[c].name for c in class_ids]
        return class_ids

    def _names(self, class_ids: list[int]) -> list[str]:
        return self.prompts.prompt_names(class_ids, self.synonyms)

    def _segment(self, sample: Sample, names: list[str], record: StageRecord) -> Segments:
        """The instances of ``names`` (one per image class, in order) in the sample."""
        raise NotImplementedError

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

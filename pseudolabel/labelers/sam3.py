"""The ``sam3`` labeler: SAM 3 concept segmentation of each image class's name, merged into ScoreMaps
by confidence (as Grounded-SAM's masks are, :mod:`pseudolabel.labelers.instance_labeler`).

Per image: each candidate class (its labels, or CLIP's zero-shot choice) becomes one phrase (the
class name, or with ``--synonyms`` the fused names, the prompt file's detector name, or POLE's
per-image choice); SAM 3 answers all phrases of the image in one batch over one image embedding
(:class:`~pseudolabel.models.sam3.ConceptSegmenter`); every kept instance (score = query score x
presence score above ``--concept-threshold``, Meta's 0.5) is a mask of its class with that score
as its confidence. Each class's presence score (does the phrase occur in the image at all) is
recorded in the manifest (``presence``).

With ``--labels none --zero-shot-from presence``, SAM 3 itself picks the candidates: every class
of the prompt set is asked, and a class is a candidate when its presence score is above
``--presence-threshold``; ``--zero-shot-from clip`` (default) uses the CLIP rule of the other
labelers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pseudolabel.core.prompts import PromptSet
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.exclusion import ClassExclusion
from pseudolabel.labelers.instance_labeler import (
    InstanceLabeler,
    InstanceLabelerOptions,
    Segments,
    clip_and_exclusion,
)
from pseudolabel.labelers.options import SYNONYM_MODES, Sam3Options
from pseudolabel.models.clip import ClipModel
from pseudolabel.models.sam3 import ConceptSegmenter

if TYPE_CHECKING:
    from pseudolabel.registry import ModelHub
    from pseudolabel.settings import LabelerSettings


@dataclass(frozen=True)
class Sam3LabelerOptions(InstanceLabelerOptions):
    """The SAM 3 labeler's own options (``sam3``) and those every instance labeler shares."""

    sam3: Sam3Options = field(default_factory=Sam3Options)

    @property
    def presence_candidates(self) -> bool:
        """Zero-shot candidates chosen by SAM 3's presence score (no CLIP needed for them)."""
        return self.zero_shot.enabled and self.sam3.zero_shot_from == "presence"

    @property
    def needs_clip(self) -> bool:
        """CLIP zero-shot candidates, POLE and exclusion need a CLIP model beside SAM 3."""
        clip_candidates = self.zero_shot.enabled and not self.presence_candidates
        return clip_candidates or self.prompting.synonyms == "pole" or self.exclusion.enabled


class Sam3Labeler(InstanceLabeler):
    """Scorer: Sample -> ScoreMaps with SAM 3; the model is built once and reused."""

    def __init__(
        self,
        segmenter: ConceptSegmenter,
        prompts: PromptSet,
        options: Sam3LabelerOptions | None = None,
        clip: ClipModel | None = None,
        exclusion: ClassExclusion | None = None,
    ) -> None:
        options = options or Sam3LabelerOptions()
        super().__init__(prompts, options, SYNONYM_MODES, clip, exclusion)
        self.segmenter = segmenter

    def _candidates(self, sample: Sample, record: StageRecord) -> list[int]:
        """With presence candidates: every class whose phrase's presence score is above
        ``presence_threshold`` (all scores recorded); else the labels or CLIP's candidates."""
        if not self.options.presence_candidates:
            return super()._candidates(sample, record)
        every_class = list(range(1, len(self.prompts.classes)))
        with record.timed("candidates_s"):
            self.segmenter.set_image(sample.rgb)
            presence = self.segmenter.presence(self._names(every_class)).tolist()
        record["candidates"] = {
            self.prompts.classes[c].name: round(p, 4) for c, p in zip(every_class, presence, strict=True)
        }
        chosen = [c for c, p in zip(every_class, presence, strict=True) if p > self.options.sam3.presence_threshold]
        record["classes"] = [self.prompts.classes[c].name for c in chosen]
        return chosen

    def _segment(self, sample: Sample, names: list[str], record: StageRecord) -> Segments:
        """SAM 3's kept instances of ``names`` (one per class, in order); records each class's presence."""
        with record.timed("sam3_s"):
            self.segmenter.set_image(sample.rgb)
            sam3 = self.options.sam3
            found = self.segmenter.segment(names, sam3.concept_threshold, sam3.mask_threshold)
        record["detections"] = len(found.scores)
        record["presence"] = {name: round(float(score), 4) for name, score in zip(names, found.presence, strict=True)}
        return Segments(found.masks, found.scores, found.prompts + 1)


def build(hub: ModelHub, prompts: PromptSet, settings: LabelerSettings, options: Sam3Options) -> Sam3Labeler:
    """SAM 3; CLIP only when CLIP zero-shot candidates, POLE or exclusion need it."""
    labeler_options = Sam3LabelerOptions(
        prompting=settings.prompting, exclusion=settings.exclusion, zero_shot=settings.zero_shot, sam3=options
    )
    clip, exclusion = clip_and_exclusion(hub, prompts, settings, labeler_options)
    return Sam3Labeler(hub.sam3(), prompts, labeler_options, clip, exclusion)

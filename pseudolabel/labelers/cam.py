"""The ``cam`` scorer: Sample -> ScoreMaps with CLIP-ES CAMs and none/fuse/pole class names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from pseudolabel.core.prompts import PromptSet
from pseudolabel.core.scoremaps import ScoreMaps
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.clip_es import ClipEsCam, background_score
from pseudolabel.labelers.exclusion import ClassExclusion, Regions, exclusion_for
from pseudolabel.labelers.options import (
    CamOptions,
    ExclusionOptions,
    PromptingOptions,
    ZeroShotOptions,
)
from pseudolabel.labelers.pole import choose_and_record
from pseudolabel.labelers.zero_shot import zero_shot_classes
from pseudolabel.models.clip import ClipModel

if TYPE_CHECKING:
    from pseudolabel.registry import ModelHub
    from pseudolabel.settings import LabelerSettings


CAM_SYNONYM_MODES = ("none", "fuse", "pole")


@dataclass(frozen=True)
class CamLabelerOptions:
    """How class names become prompts, and the optional exclusion and zero-shot steps.

    Attributes:
        prompting: synonym mode (default ``fuse``) and POLE candidates.
        exclusion: drop candidate classes that ELSE-style exclusion finds impossible in their
            own CAM region.
        zero_shot: candidates from CLIP instead of the image's labels.
    """

    prompting: PromptingOptions = field(default_factory=PromptingOptions)
    exclusion: ExclusionOptions = field(default_factory=ExclusionOptions)
    zero_shot: ZeroShotOptions = field(default_factory=ZeroShotOptions)


class CamLabeler:
    """Scorer: ScoreMaps [bg, classes...] for one sample at a time; reuses the model and text cache."""

    def __init__(
        self,
        clip: ClipModel,
        prompts: PromptSet,
        cam_options: CamOptions | None = None,
        options: CamLabelerOptions | None = None,
        autocast_dtype: torch.dtype | None = None,
        exclusion: ClassExclusion | None = None,
        cam: ClipEsCam | None = None,
    ) -> None:
        """``exclusion`` replaces the default plain-CLIP exclusion (e.g. a CLIPN-based one); ``cam``
        is the run's shared view encoder (one whose ``embed_batch`` the run calls per batch)."""
        self.clip = clip
        self.prompts = prompts
        self.options = options or CamLabelerOptions()
        self.synonyms = self.options.prompting.resolved("fuse", CAM_SYNONYM_MODES)
        self.cam_options = cam_options or CamOptions()
        self.cam = cam or ClipEsCam(clip, self.cam_options, autocast_dtype)
        self.exclusion = exclusion or ClassExclusion(clip, prompts, self.options.exclusion.threshold)
        self.background_texts = [prompts.cam_template.format(word) for word in prompts.background_words]

    def _text_features(self, names: list[str]) -> torch.Tensor:
        texts = [self.prompts.cam_template.format(name) for name in names] + self.background_texts
        return self.clip.encode_texts(texts)

    def __call__(self, sample: Sample, record: StageRecord) -> ScoreMaps:
        """Score maps of the sample's classes; records candidates, exclusions, synonym choices and
        stage seconds."""
        options = self.options
        size = sample.rgb.shape[:2]
        class_ids = list(sample.classes)
        if options.zero_shot.enabled:
            class_ids, record["candidates"] = zero_shot_classes(
                self.clip, sample.rgb, self.prompts, options.zero_shot.top_k, options.zero_shot.min_probability
            )
        with record.timed("encode_s"):
            views = self.cam.views(sample.rgb)
        first = None
        if options.exclusion.enabled or self.synonyms == "pole":
            first = self.cam.class_maps(views, self._text_features(self._names(class_ids)), len(class_ids), size)
        changed = False
        if options.exclusion.enabled and class_ids:
            names = [self.prompts.classes[c].name for c in class_ids]
            kept = self.exclusion.filter(sample.rgb, Regions(first, class_ids, names), class_ids, record)
            changed = not all(kept)
            class_ids = [c for c, keep in zip(class_ids, kept, strict=True) if keep]
            first = first[torch.tensor(kept, device=first.device)]
        names = self._names(class_ids)
        if self.synonyms == "pole" and class_ids:
            with record.timed("pole_s"):
                count = options.prompting.pole_candidates
                names = choose_and_record(self.clip, sample.rgb, first, self.prompts, class_ids, count, record)
            changed = True
        with record.timed("cam_s"):
            if first is None or changed:
                first = self.cam.class_maps(views, self._text_features(names), len(class_ids), size)
            background = background_score(first, self.cam_options.bg_alpha, self.cam_options.bg_threshold)
            scores = torch.cat([background[None], first]).cpu().numpy()
        if options.zero_shot.enabled or options.exclusion.enabled:
            record["classes"] = [self.prompts.classes[c].name for c in class_ids]
        return ScoreMaps(scores, (0, *class_ids))

    def _names(self, class_ids: list[int]) -> list[str]:
        return self.prompts.prompt_names(class_ids, self.synonyms)


def build(hub: ModelHub, prompts: PromptSet, settings: LabelerSettings, options: CamOptions) -> CamLabeler:
    """CLIP-ES CAMs on the run's CLIP and its view encoder (batched by ``--batch-size``); a CLIPN
    exclusion keeps its own CLIP."""
    _, exclusion = exclusion_for(hub, prompts, settings)
    shared = CamLabelerOptions(settings.prompting, settings.exclusion, settings.zero_shot)
    autocast = hub.settings.autocast_dtype
    return CamLabeler(hub.clip(), prompts, options, shared, autocast, exclusion, hub.clip_es_cam(options))

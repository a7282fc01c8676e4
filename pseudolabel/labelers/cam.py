"""The ``cam`` labeler: Sample -> ScoreMaps with CLIP-ES CAMs and none/fuse/pole class names."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from pseudolabel.datasets.base import Sample
from pseudolabel.exclusion import DEFAULT_THRESHOLD, ClassExclusion, zero_shot_classes
from pseudolabel.labelers.clip_es import CamOptions, ClipEsCam, background_score
from pseudolabel.models.clip import ClipModel
from pseudolabel.pole import DEFAULT_CANDIDATES, choose_synonyms
from pseudolabel.prompts import PromptSet
from pseudolabel.scoremaps import ScoreMaps

SYNONYM_MODES = ("none", "fuse", "pole")


@dataclass(frozen=True)
class CamLabelerOptions:
    """How class names become prompts and how the background channel is made.

    Attributes:
        synonyms: ``none`` (class name), ``fuse`` (CLIP-ES fused display name), ``pole``
            (per-image synonym choice).
        pole_candidates: names per class POLE chooses among (class name included).
        bg_alpha: background = (1 - max cam) ** alpha.
        bg_threshold: if set, a constant background score instead (a pixel is foreground
            where its best CAM exceeds it).
        exclude: drop candidate classes that ELSE-style exclusion finds impossible in their
            own CAM region (threshold ``exclusion_threshold`` on P_ex).
        zero_shot: ignore image labels; candidates are the ``zero_shot_top_k`` classes by
            CLIP image-level probability above ``zero_shot_min_probability``.
    """

    synonyms: str = "fuse"
    pole_candidates: int = DEFAULT_CANDIDATES
    bg_alpha: float = 1.0
    bg_threshold: float | None = None
    exclude: bool = False
    exclusion_threshold: float = DEFAULT_THRESHOLD
    zero_shot: bool = False
    zero_shot_top_k: int = 3
    zero_shot_min_probability: float = 0.1


class CamLabeler:
    """Builds ScoreMaps [bg, classes...] for one sample at a time; reuses the model and text cache."""

    def __init__(
        self,
        clip: ClipModel,
        prompts: PromptSet,
        cam_options: CamOptions | None = None,
        options: CamLabelerOptions | None = None,
        autocast_dtype: torch.dtype | None = None,
        exclusion: ClassExclusion | None = None,
    ) -> None:
        """``exclusion`` replaces the default plain-CLIP exclusion (e.g. a CLIPN-based one)."""
        self.clip = clip
        self.prompts = prompts
        self.options = options or CamLabelerOptions()
        if self.options.synonyms not in SYNONYM_MODES:
            raise ValueError(f"synonyms must be one of {SYNONYM_MODES}")
        self.cam = ClipEsCam(clip, cam_options, autocast_dtype)
        self.exclusion = exclusion or ClassExclusion(clip, prompts, self.options.exclusion_threshold)
        self.background_texts = [prompts.cam_template.format(word) for word in prompts.background_words]

    def _text_features(self, names: list[str]) -> torch.Tensor:
        texts = [self.prompts.cam_template.format(name) for name in names] + self.background_texts
        return self.clip.encode_texts(texts)

    def __call__(self, sample: Sample) -> tuple[ScoreMaps, dict[str, Any]]:
        """Score maps of the sample's classes and a manifest record (candidates, exclusions,
        synonym choices, stage seconds)."""
        record: dict[str, Any] = {}
        size = sample.rgb.shape[:2]
        class_ids = list(sample.labels)
        if self.options.zero_shot:
            class_ids = self._zero_shot_classes(sample, record)
        start = time.perf_counter()
        views = self.cam.encode_views(sample.rgb)
        record["encode_s"] = round(time.perf_counter() - start, 4)
        base_names = self._names(class_ids)
        first = None
        if self.options.exclude or self.options.synonyms == "pole":
            first = self.cam.class_maps(views, self._text_features(base_names), len(class_ids), size)
        changed = False
        if self.options.exclude and class_ids:
            start = time.perf_counter()
            kept = self._exclude(sample, class_ids, first, record)
            changed = not all(kept)
            class_ids = [c for c, keep in zip(class_ids, kept, strict=True) if keep]
            first = first[torch.tensor(kept, device=first.device)]
            base_names = self._names(class_ids)
            record["exclusion_s"] = round(time.perf_counter() - start, 4)
        names = base_names
        if self.options.synonyms == "pole" and class_ids:
            start = time.perf_counter()
            entries = [self.prompts.classes[c] for c in class_ids]
            choices = choose_synonyms(
                self.clip, sample.rgb, first, entries, self.prompts.pole_template, self.options.pole_candidates
            )
            names = [choice.chosen for choice in choices]
            record["synonyms"] = {c.class_name: c.chosen for c in choices}
            record["pole_s"] = round(time.perf_counter() - start, 4)
            changed = True
        start = time.perf_counter()
        if first is not None and not changed:
            cams = first
        else:
            cams = self.cam.class_maps(views, self._text_features(names), len(class_ids), size)
        background = background_score(cams, self.options.bg_alpha, self.options.bg_threshold)
        scores = torch.cat([background[None], cams]).cpu().numpy()
        record["cam_s"] = round(time.perf_counter() - start, 4)
        if self.options.zero_shot or self.options.exclude:
            record["classes"] = [self.prompts.classes[c].name for c in class_ids]
        return ScoreMaps(scores, (0, *class_ids)), record

    def _names(self, class_ids: list[int]) -> list[str]:
        return self.prompts.prompt_names(class_ids, self.options.synonyms)

    def _zero_shot_classes(self, sample: Sample, record: dict[str, Any]) -> list[int]:
        options = self.options
        class_ids, record["candidates"] = zero_shot_classes(
            self.clip, sample.rgb, self.prompts, options.zero_shot_top_k, options.zero_shot_min_probability
        )
        return class_ids

    def _exclude(self, sample: Sample, class_ids: list[int], cams: torch.Tensor, record: dict[str, Any]) -> list[bool]:
        result = self.exclusion(sample.rgb, cams, class_ids, class_ids)
        record["exclusion_rule"] = result.rule
        record["exclusions"] = result.exclusions
        record["excluded"] = [
            self.prompts.classes[c].name for c, keep in zip(class_ids, result.kept, strict=True) if not keep
        ]
        return result.kept

"""The ``cam`` labeler: Sample -> ScoreMaps with CLIP-ES CAMs and none/fuse/pole class names."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from pseudolabel.datasets.base import Sample
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
    """

    synonyms: str = "fuse"
    pole_candidates: int = DEFAULT_CANDIDATES
    bg_alpha: float = 1.0
    bg_threshold: float | None = None


class CamLabeler:
    """Builds ScoreMaps [bg, classes...] for one sample at a time; reuses the model and text cache."""

    def __init__(
        self,
        clip: ClipModel,
        prompts: PromptSet,
        cam_options: CamOptions | None = None,
        options: CamLabelerOptions | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.clip = clip
        self.prompts = prompts
        self.options = options or CamLabelerOptions()
        if self.options.synonyms not in SYNONYM_MODES:
            raise ValueError(f"synonyms must be one of {SYNONYM_MODES}")
        self.cam = ClipEsCam(clip, cam_options, autocast_dtype)
        self.background_texts = [prompts.cam_template.format(word) for word in prompts.background_words]

    def _text_features(self, names: list[str]) -> torch.Tensor:
        texts = [self.prompts.cam_template.format(name) for name in names] + self.background_texts
        return self.clip.encode_texts(texts)

    def __call__(self, sample: Sample) -> tuple[ScoreMaps, dict[str, Any]]:
        """Score maps of the sample's classes and a manifest record (synonym choices, stage seconds)."""
        entries = [self.prompts.classes[class_id] for class_id in sample.labels]
        size = sample.rgb.shape[:2]
        record: dict[str, Any] = {}
        start = time.perf_counter()
        views = self.cam.encode_views(sample.rgb)
        record["encode_s"] = round(time.perf_counter() - start, 4)
        if self.options.synonyms == "pole":
            start = time.perf_counter()
            first = self.cam.class_maps(views, self._text_features([e.name for e in entries]), len(entries), size)
            choices = choose_synonyms(
                self.clip, sample.rgb, first, entries, self.prompts.pole_template, self.options.pole_candidates
            )
            names = [choice.chosen for choice in choices]
            record["synonyms"] = {c.class_name: c.chosen for c in choices}
            record["pole_s"] = round(time.perf_counter() - start, 4)
        elif self.options.synonyms == "fuse":
            names = [entry.display for entry in entries]
        else:
            names = [entry.name for entry in entries]
        start = time.perf_counter()
        cams = self.cam.class_maps(views, self._text_features(names), len(entries), size)
        background = background_score(cams, self.options.bg_alpha, self.options.bg_threshold)
        scores = torch.cat([background[None], cams]).cpu().numpy()
        record["cam_s"] = round(time.perf_counter() - start, 4)
        return ScoreMaps(scores, (0, *sample.labels)), record

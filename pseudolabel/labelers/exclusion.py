"""ELSE-style exclusion of impossible classes ("excluding the impossible").

For each candidate region r (the image masked by a class's CAM, or by a Grounded-SAM mask) and
each candidate class c of the image:

* inclusion P_in(r, c): softmax over the candidate classes of CLIP similarity (scale 100)
  between the region and the forward prompts ("a photo of a {}.");
* exclusion P_ex(r, c), ELSE's rule (paper Eq. 9) with plain CLIP: softmax OVER THE DATASET'S
  WHOLE CLASS VOCABULARY (background excluded) of scale * cos(r, reverse prompt of each class),
  the reverse prompts being "a photo without {}." and "a photo of no {}." (embeddings averaged).
  Over an image's 1-3 candidates that softmax would be >= 1/3 somewhere by construction, so
  the vocabulary is the published setting's denominator;
* correction: P_cor(r, c) = 0 where P_ex(r, c) > epsilon (strict, as ELSE's code), else
  P_in(r, c) (epsilon 0.2).

With a CLIPN checkpoint (``--exclusion-weights PATH``) P_ex is CLIPN's own p_no:
softmax([scale * cos(r, yes_c), scale * cos(r, no_c)])[no], the "no" embeddings coming from
CLIPN's "no" text tower fed the forward prompts. The manifest records which rule was used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.core.prompts import PromptSet
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.labelers.options import DEFAULT_EXCLUSION_THRESHOLD
from pseudolabel.labelers.region_inputs import region_images
from pseudolabel.models.clip import ClipModel

if TYPE_CHECKING:
    from pseudolabel.registry import ModelHub
    from pseudolabel.settings import LabelerSettings

LOGIT_SCALE = 100.0
EXCLUDED_TALLY = "exclusion: regions dropped, by class"
PAIRS_TALLY = "exclusion: (region, class) pairs with P_ex over the threshold"


def prompt_embeddings(
    encode_texts: Callable[[list[str]], torch.Tensor], templates: tuple[str, ...], names: list[str]
) -> torch.Tensor:
    """Normalised mean over templates of each name's text embedding: [C, D]."""
    per_template = torch.stack([encode_texts([template.format(name) for name in names]) for template in templates])
    return F.normalize(per_template.mean(dim=0), dim=-1)


def inclusion_probabilities(regions: torch.Tensor, forward: torch.Tensor, scale: float = LOGIT_SCALE) -> torch.Tensor:
    """P_in [R, C]: softmax over classes of scale * cos(region, forward prompt)."""
    return (scale * regions @ forward.T).softmax(dim=-1)


def vocabulary_exclusion_probabilities(
    regions: torch.Tensor, reverse: torch.Tensor, scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """ELSE's P_ex [R, V]: softmax over the V vocabulary classes of scale * cos(region, reverse prompt)."""
    return (scale * regions @ reverse.T).softmax(dim=-1)


def clipn_exclusion_probabilities(
    regions: torch.Tensor, forward: torch.Tensor, reverse: torch.Tensor, scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """CLIPN's p_no [R, C]: per region and class, softmax([scale*cos(r, yes_c), scale*cos(r, no_c)])[no]."""
    yes = scale * regions @ forward.T
    no = scale * regions @ reverse.T
    return torch.stack([yes, no], dim=-1).softmax(dim=-1)[..., 1]


def corrected_probabilities(inclusion: torch.Tensor, exclusion: torch.Tensor, threshold: float) -> torch.Tensor:
    """P_cor = 0 where P_ex > threshold, else P_in."""
    return torch.where(exclusion > threshold, torch.zeros_like(inclusion), inclusion)


@dataclass(frozen=True)
class Regions:
    """Candidate regions of one image, as both labelers hand them to the exclusion stage.

    Attributes:
        maps: float [R, H, W] in [0, 1]: a class's CAM, or a SAM mask as 0/1.
        classes: the class id each region claims.
        names: how the manifest names each region.
        crop: encode each region cropped to a square around it (small SAM masks), not the whole
            masked image.
    """

    maps: torch.Tensor
    classes: list[int]
    names: list[str]
    crop: bool = False


REGION_BATCH = 64
"""Regions CLIP encodes at once: a detector's hundreds of boxes never become one huge batch."""


@dataclass(frozen=True)
class ExclusionResult:
    """Which regions keep their class, and every (region, class) pair that was zeroed."""

    kept: list[bool]
    exclusions: list[dict[str, Any]]
    rule: str


class ClassExclusion:
    """ELSE-style filter over candidate regions.

    A region keeps its class when, after the impossible (region, class) pairs are zeroed, that
    class still has the highest corrected probability among the candidates; otherwise the region
    is dropped (its class is impossible there, or another candidate explains it better).

    Reverse embeddings come from the reverse prompts on plain CLIP, or, when a CLIPN "no" tower
    is given, from the forward prompts through that tower (CLIPN's image tower then encodes the
    regions: ``clip`` must be CLIPN's).
    """

    def __init__(
        self, clip: ClipModel, prompts: PromptSet, threshold: float = DEFAULT_EXCLUSION_THRESHOLD, no_tower: Any = None
    ) -> None:
        self.clip = clip
        self.prompts = prompts
        self.threshold = threshold
        self.no_tower = no_tower

    @property
    def rule(self) -> str:
        """``else`` (P_ex over the class vocabulary, plain CLIP) or ``clipn`` (CLIPN's p_no)."""
        return "else" if self.no_tower is None else "clipn"

    def reverse_embeddings(self, names: list[str]) -> torch.Tensor:
        """Normalised [C, D] "not this class" embeddings of ``names``."""
        if self.no_tower is None:
            return prompt_embeddings(self.clip.encode_texts, self.prompts.reverse_templates, names)
        return prompt_embeddings(self._encode_no, self.prompts.forward_templates, names)

    @torch.no_grad()
    def _encode_no(self, texts: list[str]) -> torch.Tensor:
        return self.no_tower(self.clip.tokenizer(texts).to(self.clip.device)).float()

    def probabilities(
        self, region_embeddings: torch.Tensor, candidates: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(P_in, P_ex, P_cor), each [R, C], of normalised regions [R, D] and candidate class ids."""
        names = [self.prompts.classes[c].name for c in candidates]
        forward = prompt_embeddings(self.clip.encode_texts, self.prompts.forward_templates, names)
        inclusion = inclusion_probabilities(region_embeddings, forward)
        if self.no_tower is None:
            vocabulary = [entry.name for entry in self.prompts.classes[1:]]
            over_vocabulary = vocabulary_exclusion_probabilities(region_embeddings, self.reverse_embeddings(vocabulary))
            exclusion = over_vocabulary[:, [c - 1 for c in candidates]]
        else:
            exclusion = clipn_exclusion_probabilities(region_embeddings, forward, self.reverse_embeddings(names))
        return inclusion, exclusion, corrected_probabilities(inclusion, exclusion, self.threshold)

    def __call__(
        self,
        rgb: np.ndarray,
        regions: torch.Tensor,
        region_classes: list[int],
        candidates: list[int],
        region_names: list[str] | None = None,
        crop: bool = False,
    ) -> ExclusionResult:
        """Judge each region's class against the image's candidate classes.

        Args:
            rgb: uint8 [H, W, 3].
            regions: [R, H, W] in [0, 1] (CAMs, or SAM masks as 0/1).
            region_classes: the class id each region claims (one of ``candidates``).
            candidates: the image's candidate class ids.
            region_names: how the manifest names each region (default: its class name).
            crop: encode each region cropped to a square around it (small SAM masks), not the
                whole masked image.
        """
        names = [self.prompts.classes[c].name for c in candidates]
        region_names = region_names or [self.prompts.classes[c].name for c in region_classes]
        chunks = regions.split(REGION_BATCH)
        embeddings = torch.cat([self.clip.encode_images(region_images(self.clip, rgb, c, crop)) for c in chunks])
        inclusion, exclusion, corrected = self.probabilities(embeddings, candidates)
        kept = []
        for region, class_id in enumerate(region_classes):
            own = candidates.index(class_id)
            kept.append(bool(corrected[region, own] > 0 and corrected[region].argmax() == own))
        exclusions = [
            {
                "region": region_names[r],
                "class": names[c],
                "p_in": round(float(inclusion[r, c]), 4),
                "p_ex": round(float(exclusion[r, c]), 4),
            }
            for r in range(len(region_classes))
            for c in range(len(candidates))
            if exclusion[r, c] > self.threshold
        ]
        return ExclusionResult(kept, exclusions, self.rule)

    def filter(self, rgb: np.ndarray, regions: Regions, candidates: list[int], record: StageRecord) -> list[bool]:
        """The region-filter stage: which regions keep their class; records the zeroed pairs, the
        dropped regions' classes and ``exclusion_s``, and tallies both for the run summary."""
        with record.timed("exclusion_s"):
            result = self(rgb, regions.maps, regions.classes, candidates, regions.names, regions.crop)
        dropped = [
            self.prompts.classes[c].name for c, keep in zip(regions.classes, result.kept, strict=True) if not keep
        ]
        record.update(exclusion_rule=result.rule, exclusions=result.exclusions, excluded=dropped)
        for name in dropped:
            record.tally(EXCLUDED_TALLY, name)
        if result.exclusions:
            record.tally(PAIRS_TALLY, "pairs", len(result.exclusions))
        return result.kept


def exclusion_for(hub: ModelHub, prompts: PromptSet, settings: LabelerSettings) -> tuple[Any, ClassExclusion | None]:
    """(CLIP for the exclusion, exclusion) for a CLIPN checkpoint; (None, None) for plain CLIP,
    which a labeler builds itself on its own CLIP."""
    exclusion = settings.exclusion
    if not exclusion.enabled or exclusion.weights == "clip":
        return None, None
    clip, no_tower = hub.clipn(exclusion.weights)
    return clip, ClassExclusion(clip, prompts, exclusion.threshold, no_tower)

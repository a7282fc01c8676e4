"""ELSE-style exclusion of impossible classes ("excluding the impossible").

For each candidate region r (here: the image masked by a class's CAM; SAM masks work the same
way) and each candidate class c:

* inclusion P_in(r, c): softmax over the candidate classes of CLIP similarity (scale 100)
  between the region and the forward prompts ("a photo of a {}.");
* exclusion P_ex(r, c): the probability that r does NOT show c, softmax over
  [similarity to the forward prompts, similarity to the reverse prompts ("a photo without {}.",
  "a photo of no {}.")], the "no" entry, as CLIPN scores its "no" text tower (scale 100);
* correction: P_cor(r, c) = 0 where P_ex(r, c) >= epsilon, else P_in(r, c) (epsilon 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pseudolabel.models.clip import ClipModel
from pseudolabel.prompts import PromptSet

DEFAULT_THRESHOLD = 0.2
LOGIT_SCALE = 100.0


def prompt_embeddings(clip: ClipModel, templates: tuple[str, ...], names: list[str]) -> torch.Tensor:
    """Normalised mean over templates of each name's text embedding: [C, D]."""
    per_template = torch.stack([clip.encode_texts([template.format(name) for name in names]) for template in templates])
    return F.normalize(per_template.mean(dim=0), dim=-1)


def inclusion_probabilities(regions: torch.Tensor, forward: torch.Tensor, scale: float = LOGIT_SCALE) -> torch.Tensor:
    """P_in [R, C]: softmax over classes of scale * cos(region, forward prompt)."""
    return (scale * regions @ forward.T).softmax(dim=-1)


def exclusion_probabilities(
    regions: torch.Tensor, forward: torch.Tensor, reverse: torch.Tensor, scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """P_ex [R, C]: per region and class, softmax([scale*cos(r, yes_c), scale*cos(r, no_c)])[no]."""
    yes = scale * regions @ forward.T
    no = scale * regions @ reverse.T
    return torch.stack([yes, no], dim=-1).softmax(dim=-1)[..., 1]


def corrected_probabilities(inclusion: torch.Tensor, exclusion: torch.Tensor, threshold: float) -> torch.Tensor:
    """P_cor = 0 where P_ex >= threshold, else P_in."""
    return torch.where(exclusion >= threshold, torch.zeros_like(inclusion), inclusion)


@dataclass(frozen=True)
class ExclusionResult:
    """Which candidate classes survive, and every (region, class) pair that was zeroed."""

    kept: list[bool]
    exclusions: list[dict[str, Any]]


class ClassExclusion:
    """Drops a candidate class whose own region is better explained by another class once the
    impossible (region, class) pairs are zeroed, or whose region excludes every class."""

    def __init__(self, clip: ClipModel, prompts: PromptSet, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.clip = clip
        self.prompts = prompts
        self.threshold = threshold

    def __call__(self, region_embeddings: torch.Tensor, class_ids: list[int]) -> ExclusionResult:
        """Args: region_embeddings: normalised [K, D], region k = class_ids[k]'s region."""
        names = [self.prompts.classes[c].name for c in class_ids]
        forward = prompt_embeddings(self.clip, self.prompts.forward_templates, names)
        reverse = prompt_embeddings(self.clip, self.prompts.reverse_templates, names)
        inclusion = inclusion_probabilities(region_embeddings, forward)
        exclusion = exclusion_probabilities(region_embeddings, forward, reverse)
        corrected = corrected_probabilities(inclusion, exclusion, self.threshold)
        kept = [bool(corrected[k, k] > 0 and corrected[k].argmax() == k) for k in range(len(class_ids))]
        exclusions = [
            {
                "region": names[r],
                "class": names[c],
                "p_in": round(float(inclusion[r, c]), 4),
                "p_ex": round(float(exclusion[r, c]), 4),
            }
            for r in range(len(class_ids))
            for c in range(len(class_ids))
            if exclusion[r, c] >= self.threshold
        ]
        return ExclusionResult(kept, exclusions)


def zero_shot_candidates(
    clip: ClipModel, image_embedding: torch.Tensor, prompts: PromptSet, top_k: int, min_probability: float
) -> list[tuple[int, float]]:
    """Candidate classes of an unlabelled image: the top-k classes (background excluded) by CLIP
    softmax over all class names with the forward prompts, kept when above ``min_probability``.

    Args:
        image_embedding: normalised [D] of the whole image.

    Returns:
        (class id, probability) pairs, best first (at least the best class).
    """
    class_ids = list(range(1, prompts.num_classes))
    forward = prompt_embeddings(clip, prompts.forward_templates, [prompts.classes[c].name for c in class_ids])
    probabilities = (LOGIT_SCALE * image_embedding @ forward.T).softmax(dim=-1)
    order = probabilities.argsort(descending=True)[:top_k].tolist()
    chosen = [(class_ids[i], float(probabilities[i])) for i in order if probabilities[i] >= min_probability]
    return chosen or [(class_ids[order[0]], float(probabilities[order[0]]))]

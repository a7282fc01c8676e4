"""POLE synonym selection: for each class, the candidate name whose text embedding is closest to
the CLIP embedding of the image masked by that class's CAM.

Candidates are the class name and its first synonyms from the prompt set (4 in total by
default, the paper's best). The masked image is ``image * cam`` in float RGB (no uint8 cast,
so nothing overflows), resized to the CLIP input size without cropping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pseudolabel.core.prompts import ClassPrompt, PromptSet
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.labelers.options import DEFAULT_POLE_CANDIDATES
from pseudolabel.labelers.region_inputs import masked_images
from pseudolabel.models.clip import ClipModel

POLE_TALLY = "POLE: how often each name won"


@dataclass(frozen=True)
class SynonymChoice:
    """The winning name of one class and the similarity of every candidate (candidate order)."""

    class_name: str
    chosen: str
    candidates: tuple[str, ...]
    similarities: tuple[float, ...]


def candidates_of(entry: ClassPrompt, count: int = DEFAULT_POLE_CANDIDATES) -> tuple[str, ...]:
    """The class name followed by its first ``count - 1`` synonyms."""
    return (entry.name, *entry.synonyms[: max(0, count - 1)])


def pick_best(
    image_embeddings: torch.Tensor, candidate_embeddings: list[torch.Tensor]
) -> list[tuple[int, list[float]]]:
    """Index of the most similar candidate per class, with all cosine similarities.

    Args:
        image_embeddings: normalised [K, D], one masked image per class.
        candidate_embeddings: K tensors [M_k, D] (normalised).
    """
    choices = []
    for image, candidates in zip(image_embeddings, candidate_embeddings, strict=True):
        similarities = candidates @ image
        choices.append((int(similarities.argmax()), [float(s) for s in similarities]))
    return choices


def choose_synonyms(
    clip: ClipModel,
    rgb: np.ndarray,
    cams: torch.Tensor,
    entries: list[ClassPrompt],
    template: str,
    count: int = DEFAULT_POLE_CANDIDATES,
) -> list[SynonymChoice]:
    """POLE: per class, the candidate name closest to the CAM-masked image.

    Args:
        cams: [K, H, W] CAMs of ``entries`` (same order) in [0, 1].
        template: prompt with one ``{}``, e.g. ``"a photo of {}."``.
    """
    image_embeddings = clip.encode_images(masked_images(clip, rgb, cams))
    candidate_names = [candidates_of(entry, count) for entry in entries]
    candidate_embeddings = [clip.encode_texts([template.format(name) for name in names]) for names in candidate_names]
    picks = pick_best(image_embeddings, candidate_embeddings)
    return [
        SynonymChoice(entry.name, names[index], names, tuple(similarities))
        for entry, names, (index, similarities) in zip(entries, candidate_names, picks, strict=True)
    ]


def choose_and_record(
    clip: ClipModel,
    rgb: np.ndarray,
    regions: torch.Tensor,
    prompts: PromptSet,
    class_ids: list[int],
    count: int,
    record: StageRecord,
) -> list[str]:
    """POLE for a labeler: the chosen name of each class in ``class_ids`` for its region [K, H, W]
    in [0, 1]; records ``synonyms`` and tallies each choice for the run summary."""
    entries = [prompts.classes[c] for c in class_ids]
    choices = choose_synonyms(clip, rgb, regions, entries, prompts.pole_template, count)
    record["synonyms"] = {choice.class_name: choice.chosen for choice in choices}
    for choice in choices:
        record.tally(POLE_TALLY, f"{choice.class_name}: {choice.chosen}")
    return [choice.chosen for choice in choices]

"""Zero-shot candidates (``--labels none``): the classes CLIP finds most likely in a whole image."""

from __future__ import annotations

import numpy as np
import torch

from pseudolabel.core.prompts import PromptSet
from pseudolabel.labelers.exclusion import LOGIT_SCALE, prompt_embeddings
from pseudolabel.labelers.region_inputs import masked_images
from pseudolabel.models.clip import ClipModel


def zero_shot_classes(
    clip: ClipModel, rgb: np.ndarray, prompts: PromptSet, top_k: int, min_probability: float
) -> tuple[list[int], dict[str, float]]:
    """Candidate class ids (sorted) of an unlabelled uint8 [H, W, 3] image, and their CLIP
    probabilities by class name for the manifest (see :func:`zero_shot_candidates`)."""
    whole = torch.ones(1, *rgb.shape[:2], device=clip.device)
    embedding = clip.encode_images(masked_images(clip, rgb, whole))[0]
    candidates = zero_shot_candidates(clip, embedding, prompts, top_k, min_probability)
    return sorted(c for c, _ in candidates), {prompts.classes[c].name: round(p, 4) for c, p in candidates}


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
    forward = prompt_embeddings(
        clip.encode_texts, prompts.forward_templates, [prompts.classes[c].name for c in class_ids]
    )
    probabilities = (LOGIT_SCALE * image_embedding @ forward.T).softmax(dim=-1)
    order = probabilities.argsort(descending=True)[:top_k].tolist()
    chosen = [(class_ids[i], float(probabilities[i])) for i in order if probabilities[i] >= min_probability]
    return chosen or [(class_ids[order[0]], float(probabilities[order[0]]))]

"""POLE: the candidate most similar to the CAM-masked image wins; masking does not overflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_clip import tiny_clip

from pseudolabel.core.prompts import load_prompts
from pseudolabel.labelers.pole import candidates_of, choose_synonyms, pick_best
from pseudolabel.labelers.region_inputs import masked_images

VOC = load_prompts("voc")


def test_candidates_are_the_name_and_first_synonyms() -> None:
    assert candidates_of(VOC.classes[8]) == ("cat", "kitten", "feline", "kitty")
    assert candidates_of(VOC.classes[8], 2) == ("cat", "kitten")


def test_pick_best_takes_the_highest_cosine() -> None:
    basis = torch.eye(4)
    image = F.normalize(torch.tensor([[0.1, 0.2, 0.9, 0.1], [0.9, 0.0, 0.0, 0.1]]), dim=-1)
    picks = pick_best(image, [basis, basis[[3, 0]]])
    assert picks[0][0] == 2 and picks[1][0] == 1
    assert picks[0][1] == pytest.approx(image[0].tolist())


def test_choose_synonyms_wires_prompts_template_and_masked_images(monkeypatch: pytest.MonkeyPatch) -> None:
    clip = tiny_clip()
    dimension = 32
    vectors = {}

    def fake_texts(texts: list[str]) -> torch.Tensor:
        for text in texts:
            vectors.setdefault(
                text, F.normalize(torch.randn(dimension, generator=torch.Generator().manual_seed(len(vectors))), dim=0)
            )
        return torch.stack([vectors[text] for text in texts])

    seen_images: list[torch.Tensor] = []

    def fake_images(images: torch.Tensor) -> torch.Tensor:
        seen_images.append(images)
        # the cat's masked image looks like "feline", the person's like "human"
        return torch.stack([fake_texts(["a photo of feline."])[0], fake_texts(["a photo of human."])[0]])

    monkeypatch.setattr(clip, "encode_texts", fake_texts)
    monkeypatch.setattr(clip, "encode_images", fake_images)
    rgb = np.full((20, 30, 3), 200, np.uint8)
    cams = torch.zeros(2, 20, 30)
    cams[0, :, :10] = 1.0
    cams[1, :, 20:] = 1.0
    choices = choose_synonyms(clip, rgb, cams, [VOC.classes[8], VOC.classes[15]], VOC.pole_template)
    assert [c.chosen for c in choices] == ["feline", "human"]
    assert choices[0].candidates == ("cat", "kitten", "feline", "kitty")
    assert max(choices[0].similarities) == pytest.approx(choices[0].similarities[2])
    assert seen_images[0].shape == (2, 3, 32, 32)


def test_masked_images_keep_float_values_without_overflow() -> None:
    clip = tiny_clip()
    rgb = np.full((16, 16, 3), 255, np.uint8)
    cams = torch.stack([torch.ones(16, 16), torch.full((16, 16), 0.5)])
    images = masked_images(clip, rgb, cams, 16)
    expected = clip.normalize(torch.stack([torch.ones(3, 16, 16), torch.full((3, 16, 16), 0.5)]))
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)

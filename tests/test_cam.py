"""CLIP-ES CAM pieces against independent computations built from open_clip's own modules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_clip import tiny_clip

from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.cam import CamLabeler, CamLabelerOptions
from pseudolabel.labelers.clip_es import (
    CamOptions,
    ClipEsCam,
    caa_transition,
    gradcam_last_block,
    refine_with_affinity,
    region_box_mask,
)
from pseudolabel.models.clip import block_forward, patch_tokens
from pseudolabel.prompts import load_prompts
from pseudolabel.scoremaps import decode, load_scores, save_scores

VOC = load_prompts("voc")


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


def _image(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    rgb[20:60, 30:90] = (200, 40, 40)  # a red object
    return rgb


def _text_features(clip, names: list[str]) -> torch.Tensor:
    texts = [VOC.cam_template.format(n) for n in names] + [VOC.cam_template.format(w) for w in VOC.background_words]
    return clip.encode_texts(texts)


def test_block_forward_matches_open_clip(clip) -> None:
    block = clip.model.visual.transformer.resblocks[1]
    tokens = torch.randn(2, 13, 64)
    plain, none = block_forward(block, tokens)
    with_attention, attention = block_forward(block, tokens, need_attention=True)
    expected = block(tokens)
    assert none is None
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_attention, expected, atol=1e-5, rtol=1e-5)
    _, weights = block.attn(block.ln_1(tokens), block.ln_1(tokens), block.ln_1(tokens), average_attn_weights=True)
    torch.testing.assert_close(attention, weights, atol=1e-6, rtol=1e-5)


def test_patch_tokens_equal_open_clip_at_training_size_and_interpolate_otherwise(clip) -> None:
    visual = clip.model.visual
    image = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(patch_tokens(visual, image), visual._embeds(image))
    assert patch_tokens(visual, torch.randn(1, 3, 48, 80)).shape == (1, 1 + 3 * 5, 64)


def _independent_gradcam(clip, tokens: torch.Tensor, text_features: torch.Tensor, target: int) -> torch.Tensor:
    """GradCAM of one class with plain autograd through open_clip's own last block."""
    visual = clip.model.visual
    inputs = tokens.detach().clone().requires_grad_(True)
    out = visual.transformer.resblocks[-1](inputs)
    features = F.normalize(visual.ln_post(out)[:, 1:].mean(dim=1) @ visual.proj, dim=-1)
    probabilities = (clip.model.logit_scale.exp() * features @ text_features.T).softmax(dim=-1)
    (gradient,) = torch.autograd.grad(probabilities[0, target], inputs)
    cam = torch.relu(inputs[0, 1:].detach() @ gradient[0, 1:].mean(dim=0))
    cam = cam - cam.min()
    return cam / (cam.max() + 1e-7)


def test_batched_gradcam_equals_per_class_autograd(clip) -> None:
    view = ClipEsCam(clip).encode_views(_image())[0]
    names = ["cat", "dog", "person"]
    text_features = _text_features(clip, names)
    cams, _ = gradcam_last_block(clip, view.tokens, text_features, len(names))
    assert cams.shape == (3, 6 * 8)
    for index in range(len(names)):
        expected = _independent_gradcam(clip, view.tokens, text_features, index)
        assert expected.max() > 0.5  # a non-trivial map
        torch.testing.assert_close(cams[index], expected, atol=1e-5, rtol=1e-4)


def test_caa_transition_is_symmetric_and_nearly_stochastic() -> None:
    attention = torch.rand(20, 20).softmax(dim=-1)
    transition = caa_transition(attention)
    torch.testing.assert_close(transition, transition.T)
    assert (transition >= 0).all()
    torch.testing.assert_close(transition.sum(dim=1), torch.ones(20), atol=1e-3, rtol=0)


def test_region_boxes_cover_each_region_above_threshold() -> None:
    cam = np.zeros((10, 12), np.float32)
    cam[1:3, 1:4] = 1.0  # region A: rows 1-2, cols 1-3
    cam[6, 8] = 0.9
    cam[7, 9] = 0.8  # region B: diagonal neighbours -> one 8-connected region, box rows 6-7, cols 8-9
    cam[5, 0] = 0.3  # below 0.4 * max: no box
    mask = region_box_mask(cam, 0.4)
    expected = np.zeros_like(cam)
    expected[1:3, 1:4] = 1
    expected[6:8, 8:10] = 1
    np.testing.assert_array_equal(mask, expected)


def test_affinity_refinement_with_identity_keeps_cam_inside_boxes() -> None:
    cam = torch.zeros(1, 4 * 5)
    cam[0, [6, 7, 13]] = torch.tensor([1.0, 0.5, 0.2])  # 0.2 < 0.4: outside every box
    refined = refine_with_affinity(cam, torch.eye(20), (4, 5), 0.4)
    expected = torch.zeros(20)
    expected[[6, 7]] = torch.tensor([1.0, 0.5])
    torch.testing.assert_close(refined[0], expected / (1 + 1e-7))


def _literal_caa(attention: np.ndarray) -> np.ndarray:
    transition = attention.astype(np.float64)
    for _ in range(3):
        transition = transition / transition.sum(axis=0, keepdims=True)
        transition = transition / transition.sum(axis=1, keepdims=True)
    transition = (transition + transition.T) / 2
    return transition @ transition


def _literal_boxes(cam: np.ndarray) -> np.ndarray:
    binary = (cam > 0.4 * cam.max()).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros_like(cam)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        mask[y : y + h, x : x + w] = 1
    return mask


def _reference_scores(clip, rgb: np.ndarray, names: list[str]) -> np.ndarray:
    """REFERENCE.md's formula, step by step with open_clip modules, numpy and cv2."""
    visual = clip.model.visual
    height, width = rgb.shape[:2]
    image = ClipEsCam(clip).view_tensor(rgb, 1.0, False)
    grid = (image.shape[2] // 16, image.shape[3] // 16)
    tokens = patch_tokens(visual, image).detach()
    attentions = []
    with torch.no_grad():
        for block in visual.transformer.resblocks[:-1]:
            normed = block.ln_1(tokens)
            attentions.append(block.attn(normed, normed, normed, average_attn_weights=True)[1][0])
            tokens = block(tokens)
        last = visual.transformer.resblocks[-1]
        normed = last.ln_1(tokens)
        attentions.append(last.attn(normed, normed, normed, average_attn_weights=True)[1][0])
    attention = torch.stack(attentions[-8:]).mean(dim=0)[1:, 1:].numpy()
    transition = _literal_caa(attention)
    text_features = _text_features(clip, names)
    channels = []
    for index in range(len(names)):
        cam = _independent_gradcam(clip, tokens, text_features, index).numpy().reshape(grid)
        refined = (transition * _literal_boxes(cam).reshape(1, -1)) @ cam.reshape(-1)
        refined = refined - refined.min()
        refined = (refined / (refined.max() + 1e-7)).reshape(grid).astype(np.float32)
        channels.append(cv2.resize(refined, (width, height), interpolation=cv2.INTER_LINEAR))
    cams = np.stack(channels)
    return np.concatenate([1 - cams.max(axis=0, keepdims=True), cams])


def test_saved_scores_equal_the_reference_formula(clip, tmp_path) -> None:
    rgb = _image(90, 120)  # not a multiple of 16: the view is resized to 96 x 128
    sample = Sample("x", rgb, (8, 15), None)
    labeler = CamLabeler(clip, VOC, CamOptions(), CamLabelerOptions(synonyms="fuse"))
    maps, _ = labeler(sample)
    save_scores(tmp_path / "x.npz", maps)
    saved = load_scores(tmp_path / "x.npz")
    assert saved.class_ids == (0, 8, 15) and saved.scores.shape == (3, 90, 120)
    expected = _reference_scores(clip, rgb, [VOC.classes[8].display, VOC.classes[15].display])
    np.testing.assert_allclose(saved.scores, expected, atol=2e-3)


def test_flip_views_make_cams_flip_equivariant(clip) -> None:
    rgb = _image()
    cam = ClipEsCam(clip, CamOptions(flip=True))
    features = _text_features(clip, ["cat", "dog"])
    maps = cam.class_maps(cam.encode_views(rgb), features, 2, rgb.shape[:2])
    flipped = cam.class_maps(cam.encode_views(rgb[:, ::-1].copy()), features, 2, rgb.shape[:2])
    torch.testing.assert_close(flipped, maps.flip(-1), atol=1e-4, rtol=1e-4)
    single = ClipEsCam(clip).class_maps(ClipEsCam(clip).encode_views(rgb), features, 2, rgb.shape[:2])
    assert (single - maps).abs().max() > 1e-3  # the flipped view does change the result


def test_scales_change_the_result(clip) -> None:
    rgb = _image()
    features = _text_features(clip, ["cat"])
    one = ClipEsCam(clip, CamOptions(scales=(1.0,)))
    many = ClipEsCam(clip, CamOptions(scales=(1.0, 0.5, 1.5)))
    first = one.class_maps(one.encode_views(rgb), features, 1, rgb.shape[:2])
    second = many.class_maps(many.encode_views(rgb), features, 1, rgb.shape[:2])
    assert len(many.encode_views(rgb)) == 3
    assert (first - second).abs().max() > 1e-3


def test_labels_of_decoded_masks_are_background_unsure_or_image_labels(clip) -> None:
    sample = Sample("x", _image(), (8, 15), None)
    for mode in ("none", "fuse", "pole"):
        maps, record = CamLabeler(clip, VOC, options=CamLabelerOptions(synonyms=mode))(sample)
        labels = decode(maps, 0.05)
        assert set(np.unique(labels)) <= {0, 8, 15, 255}
        assert ("synonyms" in record) == (mode == "pole")


def test_background_threshold_makes_a_constant_channel(clip) -> None:
    sample = Sample("x", _image(), (8,), None)
    maps, _ = CamLabeler(clip, VOC, options=CamLabelerOptions(bg_threshold=0.3))(sample)
    assert np.all(maps.scores[0] == np.float32(0.3))
    labels = decode(maps)
    np.testing.assert_array_equal(labels == 8, maps.scores[1] > 0.3)

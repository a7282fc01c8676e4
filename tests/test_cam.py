"""CLIP-ES CAM pieces against independent computations built from open_clip's own modules."""

from __future__ import annotations

import cv2
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from helpers import score_sample
from PIL import Image
from tiny_clip import tiny_clip

from pseudolabel.core.prompts import load_prompts
from pseudolabel.core.scoremaps import decode, load_scores, save_scores
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.cam import CamLabeler, CamLabelerOptions
from pseudolabel.labelers.clip_es import (
    ClipEsCam,
    caa_transition,
    gradcam_last_block,
    patch_mean_qkv_gradient,
    refine_with_affinity,
    region_box_mask,
)
from pseudolabel.labelers.options import CamOptions, PromptingOptions
from pseudolabel.models.clip import (
    ATTENTION_QUERY_ROWS,
    attention_heads,
    attention_with_weights,
    block_forward,
    block_weights,
    patch_tokens,
)

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


@pytest.mark.parametrize("length", [13, 2 * ATTENTION_QUERY_ROWS + 5])
def test_block_forward_matches_open_clip(clip, length: int) -> None:
    """Tokens, head-mean attention and per-head attention equal open_clip's, also where the
    queries run in several steps of :data:`ATTENTION_QUERY_ROWS`."""
    block = clip.model.visual.transformer.resblocks[1]
    tokens = torch.randn(2, length, 64)
    plain, none = block_forward(block, tokens)
    with_attention, attention = block_forward(block, tokens, need_attention=True)
    expected = block(tokens)
    assert none is None
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_attention, expected, atol=1e-5, rtol=1e-5)
    normed = block.ln_1(tokens)
    _, weights = block.attn(normed, normed, normed, average_attn_weights=False)
    torch.testing.assert_close(attention, weights.mean(dim=1), atol=1e-6, rtol=1e-5)
    query, key, value = attention_heads(block, normed, block_weights(block))
    mixed, head_mean, per_head = attention_with_weights(query, key, value)
    torch.testing.assert_close(per_head, weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(head_mean, weights.mean(dim=1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mixed, F.scaled_dot_product_attention(query, key, value), atol=1e-6, rtol=1e-5)


def test_patch_tokens_equal_open_clip_at_training_size_and_interpolate_otherwise(clip) -> None:
    visual = clip.model.visual
    image = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(patch_tokens(visual, image), visual._embeds(image))
    assert patch_tokens(visual, torch.randn(1, 3, 48, 80)).shape == (1, 1 + 3 * 5, 64)


class _LayerHook:
    """pytorch-grad-cam's ActivationsAndGradients: a forward hook that keeps a layer's output and
    registers a tensor hook for the gradient that reaches it."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.activation: torch.Tensor | None = None
        self.gradient: torch.Tensor | None = None
        self.handle = layer.register_forward_hook(self._save)

    def _save(self, module, inputs, output) -> None:
        self.activation = output.detach()

        def store(grad: torch.Tensor) -> None:
            self.gradient = grad.detach()

        if output.requires_grad:
            output.register_hook(store)


def _reference_text_features(clip, names: list[str]) -> torch.Tensor:
    """CLIP-ES's ``zeroshot_classifier``: every text encoded alone, L2-normalised."""
    texts = [VOC.cam_template.format(n) for n in names] + [VOC.cam_template.format(w) for w in VOC.background_words]
    with torch.no_grad():
        features = [clip.model.encode_text(clip.tokenizer([text]))[0] for text in texts]
    return F.normalize(torch.stack(features), dim=-1)


def _reference_last_block_input(clip, rgb: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
    """CLIP-ES's preprocessing and ``encode_image``: PIL bicubic resize of the uint8 image to a
    multiple of 16, ToTensor, Normalize, positional embedding resized bilinearly; all blocks but
    the last under no_grad with their head-averaged attention maps.

    Returns:
        (last-block input [1, 1 + N, C], attention maps [1 + N, 1 + N] per block, grid).
    """
    visual = clip.model.visual
    height, width = rgb.shape[:2]
    size = (int(np.ceil(height / 16) * 16), int(np.ceil(width / 16) * 16))
    resized = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BICUBIC), dtype=np.float32) / 255
    mean = np.asarray(open_clip.OPENAI_DATASET_MEAN, np.float32)
    std = np.asarray(open_clip.OPENAI_DATASET_STD, np.float32)
    image = torch.from_numpy((resized - mean) / std).permute(2, 0, 1)[None]
    grid = (size[0] // 16, size[1] // 16)
    with torch.no_grad():
        x = visual.conv1(image).flatten(2).transpose(1, 2)
        position = visual.positional_embedding
        trained = int(np.sqrt(position.shape[0] - 1))
        patch_position = position[1:].T.reshape(1, -1, trained, trained)
        patch_position = F.interpolate(patch_position, size=grid, mode="bilinear", align_corners=False)
        position = torch.cat([position[:1], patch_position.reshape(position.shape[1], -1).T])
        x = torch.cat([visual.class_embedding.expand(1, 1, -1), x], dim=1) + position
        x = visual.ln_pre(x)
        attentions = []
        for block in visual.transformer.resblocks[:-1]:
            normed = block.ln_1(x)
            attentions.append(block.attn(normed, normed, normed, need_weights=True, average_attn_weights=True)[1][0])
            x = block(x)
    return x, attentions, grid


def _reference_gradcam(clip, tokens: torch.Tensor, text_features: torch.Tensor, target: int):
    """pytorch-grad-cam's GradCAM on ``resblocks[-1].ln_1`` for one class: autograd through
    open_clip's own last block, weights = mean gradient over patches, ReLU, its min-max twice.

    Returns:
        (cam [h * w] float32 numpy, last-block attention [1 + N, 1 + N]).
    """
    visual = clip.model.visual
    last = visual.transformer.resblocks[-1]
    hook = _LayerHook(last.ln_1)
    try:
        x = tokens.detach().clone().requires_grad_(True)  # pytorch-grad-cam needs a graph to hook
        out = last(x)
        normed = last.ln_1(tokens)
        attention = last.attn(normed, normed, normed, need_weights=True, average_attn_weights=True)[1][0]
        features = F.normalize(visual.ln_post(out)[:, 1:].mean(dim=1) @ visual.proj, dim=-1)
        probabilities = (clip.model.logit_scale.exp() * features @ text_features.T).softmax(dim=-1)
        probabilities[0, target].backward()
    finally:
        hook.handle.remove()
    activations = hook.activation[0, 1:].numpy()  # [N, C]
    gradients = hook.gradient[0, 1:].numpy()
    cam = np.maximum((activations * gradients.mean(axis=0)).sum(axis=1), 0).astype(np.float32)
    for _ in range(2):  # scale_cam_image per layer, then after aggregating the (single) layer
        cam = cam - cam.min()
        cam = cam / (1e-7 + cam.max())
    return cam, attention.detach()


def _reference_box_mask(cam: np.ndarray, threshold: float = 0.4) -> np.ndarray:
    """CLIP-ES ``scoremap2bbox`` (multi-contour) and its ``aff_mask`` loop, literally."""
    height, width = cam.shape
    image = np.expand_dims((cam * 255).astype(np.uint8), 2)
    _, binary = cv2.threshold(image, int(threshold * np.max(image)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    boxes = [[0, 0, 0, 0]] if len(contours) == 0 else []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    mask = np.zeros((height, width), np.float32)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 1
    return mask


def _reference_caa(cam: np.ndarray, attention: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """CLIP-ES's CAA lines: normalise columns then rows (1 + 2 rounds), symmetrise, square once,
    mask columns with the boxes, multiply the CAM; then scale_cam_image's min-max."""
    transition = attention / attention.sum(dim=0, keepdim=True)
    transition = transition / transition.sum(dim=1, keepdim=True)
    for _ in range(2):
        transition = transition / transition.sum(dim=0, keepdim=True)
        transition = transition / transition.sum(dim=1, keepdim=True)
    transition = (transition + transition.T) / 2
    transition = transition @ transition
    transition = transition * torch.from_numpy(_reference_box_mask(cam.reshape(grid))).reshape(1, -1)
    refined = (transition @ torch.from_numpy(cam).reshape(-1, 1)).reshape(grid).numpy().astype(np.float32)
    refined = refined - refined.min()
    return refined / (1e-7 + refined.max())


def _reference_scores(clip, rgb: np.ndarray, names: list[str], caa: bool = True) -> np.ndarray:
    """CLIP-ES's saved maps (``attn_highres``, or ``highres`` without CAA) under (1 - max) background.

    Returns:
        float32 [1 + K, H, W].
    """
    height, width = rgb.shape[:2]
    tokens, attentions, grid = _reference_last_block_input(clip, rgb)
    text_features = _reference_text_features(clip, names)
    channels = []
    for index in range(len(names)):
        cam, last_attention = _reference_gradcam(clip, tokens, text_features, index)
        if caa:
            attention = torch.stack([a[1:, 1:] for a in [*attentions, last_attention]][-8:]).mean(dim=0)
            cam = _reference_caa(cam, attention, grid)
        channels.append(cv2.resize(cam.reshape(grid), (width, height)))
    cams = np.stack(channels)
    return np.concatenate([1 - cams.max(axis=0, keepdims=True), cams])


def test_batched_gradcam_equals_hooked_per_class_gradcam(clip) -> None:
    rgb = _image()
    view = ClipEsCam(clip).encode_views(rgb)[0]
    names = ["cat", "dog", "person"]
    tokens, _, _ = _reference_last_block_input(clip, rgb)
    text_features = _reference_text_features(clip, names)
    torch.testing.assert_close(view.tokens, tokens, atol=1e-5, rtol=1e-5)
    cams, _ = gradcam_last_block(clip, view.tokens, text_features, len(names))
    assert cams.shape == (3, 6 * 8)
    for index in range(len(names)):
        expected, _ = _reference_gradcam(clip, tokens, text_features, index)
        assert expected.max() > 0.5 and (expected == 0).sum() < expected.size  # a non-trivial map
        np.testing.assert_allclose(cams[index].numpy(), expected, atol=1e-5)


def test_patch_mean_qkv_gradient_equals_autograd_through_the_attention() -> None:
    """The closed form GradCAM uses against autograd's full dQ, dK, dV, averaged over patch tokens."""
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 3, 1 + 10, 4, generator=generator) for _ in range(3))
    key[..., 0, :] *= 8  # the class token draws much of the attention, so its terms matter
    query, key, value = (part.requires_grad_(True) for part in (query, key, value))
    mixed, _, attention = attention_with_weights(query, key, value)
    grad_mixed = torch.randn(2, 3, 1 + 10, 4, generator=generator)
    expected = []
    for gradient in grad_mixed:
        parts = torch.autograd.grad(mixed, (query, key, value), gradient[None], retain_graph=True)
        expected.append(torch.stack([part[0, :, 1:].mean(dim=1) for part in parts]).flatten())
    assert attention[..., 0].mean() > 0.2  # uniform attention would give it 1/11
    got = patch_mean_qkv_gradient(grad_mixed, query.detach(), key.detach(), value.detach(), attention.detach(),
                                  mixed.detach())  # fmt: skip
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-6, rtol=1e-5)


def test_gradcam_is_taken_at_ln_1_output_not_the_block_input(clip) -> None:
    """The block-input GradCAM (what this tool computed before) is a different map."""
    rgb = _image()
    tokens, _, _ = _reference_last_block_input(clip, rgb)
    text_features = _reference_text_features(clip, ["cat", "dog"])
    visual = clip.model.visual
    x = tokens.clone().requires_grad_(True)
    features = F.normalize(visual.ln_post(visual.transformer.resblocks[-1](x))[:, 1:].mean(dim=1) @ visual.proj, dim=-1)
    (gradient,) = torch.autograd.grad((clip.model.logit_scale.exp() * features @ text_features.T).softmax(-1)[0, 0], x)
    block_input = torch.relu(tokens[0, 1:] @ gradient[0, 1:].mean(dim=0)).numpy()
    expected, _ = _reference_gradcam(clip, tokens, text_features, 0)
    ours = gradcam_last_block(clip, tokens, text_features, 2)[0][0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert np.abs(block_input / (block_input.max() + 1e-7) - expected).max() > 0.1


def test_caa_transition_is_symmetric_and_nearly_stochastic() -> None:
    attention = torch.rand(20, 20).softmax(dim=-1)
    transition = caa_transition(attention)
    torch.testing.assert_close(transition, transition.T)
    assert (transition >= 0).all()
    torch.testing.assert_close(transition.sum(dim=1), torch.ones(20), atol=1e-3, rtol=0)


def test_region_boxes_follow_clip_es_scoremap2bbox() -> None:
    cam = np.zeros((10, 12), np.float32)
    cam[1:3, 1:4] = 1.0  # region A: box rows 1-2, cols 1-3
    cam[5:7, 10:12] = 0.9  # region B touches the right edge: x1 = min(12, 11) drops column 11
    cam[8:10, 0:2] = 0.8  # region C touches the bottom edge: y1 = min(10, 9) drops row 9
    cam[4, 6] = 0.402  # uint8 102, not > int(0.4 * 255) = 102 (a float rule would keep it)
    mask = region_box_mask(cam, 0.4)
    expected = np.zeros_like(cam)
    expected[1:3, 1:4] = 1
    expected[5:7, 10:11] = 1
    expected[8:9, 0:2] = 1
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(mask, _reference_box_mask(cam))
    ring = np.zeros((9, 9), np.float32)
    ring[1:8, 1:8] = 1.0
    ring[3:6, 3:6] = 0.0  # a hole: RETR_TREE adds its inner contour's box, inside the outer one
    np.testing.assert_array_equal(region_box_mask(ring, 0.4), _reference_box_mask(ring))
    assert region_box_mask(np.zeros((4, 4), np.float32), 0.4).sum() == 0


def test_affinity_refinement_with_identity_keeps_cam_inside_boxes() -> None:
    cam = torch.zeros(1, 4 * 5)
    cam[0, [6, 7, 13]] = torch.tensor([1.0, 0.5, 0.2])  # 0.2 < 0.4: outside every box
    refined = refine_with_affinity(cam, torch.eye(20), (4, 5), 0.4)
    expected = torch.zeros(20)
    expected[[6, 7]] = torch.tensor([1.0, 0.5])
    torch.testing.assert_close(refined[0], expected / (1 + 1e-7))


@pytest.mark.parametrize("size", [(90, 120), (50, 200)])
def test_saved_scores_equal_clip_es_published_computation(clip, tmp_path, size) -> None:
    rgb = _image(*size)  # not multiples of 16: the view is resized, the positional embedding interpolated
    sample = Sample("x", rgb, (8, 15), None)
    labeler = CamLabeler(clip, VOC, CamOptions(), CamLabelerOptions(PromptingOptions(synonyms="fuse")))
    maps, _ = score_sample(labeler, sample)
    save_scores(tmp_path / "x.npz", maps)
    saved = load_scores(tmp_path / "x.npz")
    assert saved.class_ids == (0, 8, 15) and saved.scores.shape == (3, *size)
    expected = _reference_scores(clip, rgb, [VOC.classes[8].display, VOC.classes[15].display])
    np.testing.assert_allclose(maps.scores, expected, atol=2e-4)
    np.testing.assert_allclose(saved.scores, expected, atol=1e-3)  # float16 storage


def test_raw_cams_equal_clip_es_highres(clip) -> None:
    rgb = _image(90, 120)
    names = [VOC.classes[8].display, VOC.classes[15].display]
    cam = ClipEsCam(clip, CamOptions(caa=False))
    maps = cam.class_maps(cam.encode_views(rgb), _reference_text_features(clip, names), 2, rgb.shape[:2])
    np.testing.assert_allclose(maps.numpy(), _reference_scores(clip, rgb, names, caa=False)[1:], atol=1e-5)


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
        maps, record = score_sample(CamLabeler(clip, VOC, options=CamLabelerOptions(PromptingOptions(mode))), sample)
        labels = decode(maps, 0.05)
        assert set(np.unique(labels)) <= {0, 8, 15, 255}
        assert ("synonyms" in record) == (mode == "pole")


def test_background_threshold_makes_a_constant_channel(clip) -> None:
    sample = Sample("x", _image(), (8,), None)
    maps, _ = score_sample(CamLabeler(clip, VOC, CamOptions(bg_threshold=0.3)), sample)
    assert np.all(maps.scores[0] == np.float32(0.3))
    labels = decode(maps)
    np.testing.assert_array_equal(labels == 8, maps.scores[1] > 0.3)

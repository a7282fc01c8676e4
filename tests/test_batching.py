"""Batching across images: SAM embeds a batch in one encoder pass, CLIP-ES its views of equal size,
Grounding DINO its backbone over images of equal input size; a batch fails image by image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tiny_clip import tiny_clip
from tiny_grounding import write_tiny_grounding_config
from tiny_sam import tiny_sam

from pseudolabel.core.errors import SampleError
from pseudolabel.core.prompts import load_prompts
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.clip_es import ClipEsCam
from pseudolabel.labelers.detection import caption_spans
from pseudolabel.labelers.options import CamOptions
from pseudolabel.models.grounding import build_grounding_dino
from pseudolabel.models.sam import SamPrompter
from pseudolabel.runner.loop import ImageResult, Item, label_batch

VOC = load_prompts("voc")


def test_a_batch_embedding_equals_each_image_embedded_alone() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((60, 90, 3), (90, 40, 3), (50, 50, 3))]
    alone = SamPrompter(tiny_sam())
    expected = []
    for rgb in images:
        alone.set_image(rgb)
        expected.append((alone.predictor.features.clone(), alone.predictor.original_size, alone.predictor.input_size))
    batched = SamPrompter(tiny_sam())
    batched.embed_batch(images)
    calls = []
    batched.sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    points = np.array([[10.0, 12.0], [30.0, 20.0]])
    for rgb, (features, original_size, input_size) in zip(images, expected, strict=True):
        batched.set_image(rgb)
        torch.testing.assert_close(batched.predictor.features, features, atol=1e-5, rtol=1e-5)
        assert (batched.predictor.original_size, batched.predictor.input_size) == (original_size, input_size)
        alone.set_image(rgb)
        masks, scores = batched.predict_points(points)
        expected_masks, expected_scores = alone.predict_points(points)
        assert torch.equal(masks, expected_masks)
        torch.testing.assert_close(scores, expected_scores, atol=1e-5, rtol=1e-5)
    assert calls == []  # every image came from the batch
    batched.set_image(images[0].copy())  # another array: encoded on its own
    assert calls == [1]


class Recording:
    """An image function that prepares batches and fails on one image id."""

    def __init__(self) -> None:
        self.prepared: list[list[str]] = []

    def prepare_batch(self, samples: list[Sample]) -> None:
        self.prepared.append([sample.image_id for sample in samples])

    def __call__(self, sample: Sample) -> ImageResult:
        if sample.image_id == "bad":
            raise SampleError("bad image")
        return ImageResult(np.zeros((2, 2), np.uint8))


def _item(image_id: str) -> Item:
    return Item(image_id, sample=Sample(image_id, np.zeros((2, 2, 3), np.uint8), (1,), None))


def test_label_batch_prepares_once_and_fails_image_by_image() -> None:
    function = Recording()
    unreadable = Item("unreadable", error="cannot decode")
    items = label_batch([_item("a"), unreadable, _item("bad"), _item("b")], function)
    assert function.prepared == [["a", "bad", "b"]]
    assert [item.error for item in items] == [None, "cannot decode", "bad image", None]
    assert items[0].result is not None and items[3].result is not None and items[2].result is None
    assert all(item.sample is None for item in items) and "batch_s" in items[0].seconds
    label_batch([_item("alone")], function)
    assert len(function.prepared) == 1  # a batch of one is not prepared


def test_clip_es_views_of_a_batch_equal_each_image_encoded_alone() -> None:
    """Views of equal size across images run as one forward (here 3 images of one size, 1 of
    another; 2 scales with flips): each image gets its own views in order, and its CAMs equal
    those of the image encoded alone within 1e-5 (batched rows round differently; measured 0 on this
    CPU), and no view is encoded twice."""
    clip = tiny_clip()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(64, 96, 3)] * 3 + [(96, 64, 3)]]
    features = clip.encode_texts([VOC.cam_template.format(name) for name in ("cat", "dog", "ground", "sky")])
    options = CamOptions(scales=(1.0, 0.5), flip=True)
    batched = ClipEsCam(clip, options)
    forwards: list[int] = []
    clip.model.visual.conv1.register_forward_hook(lambda module, inputs, output: forwards.append(len(output)))
    batched.embed_batch(images)
    assert sorted(forwards) == [2, 2, 6, 6]  # per size and scale, every image's view and its flip at once
    for rgb in images:
        views = batched.views(rgb)
        alone = ClipEsCam(clip, options).encode_views(rgb)
        assert [(v.grid, v.flipped) for v in views] == [(v.grid, v.flipped) for v in alone]
        ours = batched.class_maps(views, features, 2, rgb.shape[:2])
        torch.testing.assert_close(ours, batched.class_maps(alone, features, 2, rgb.shape[:2]), atol=1e-5, rtol=0)
    assert len(forwards) == 4 + 2 * len(images)  # the views above came from the batch


def test_grounding_dino_backbone_of_a_batch_equals_each_image_alone(tmp_path: Path) -> None:
    """Images of equal detector input size share one backbone forward (no padding: 2 images of one
    size, 1 of another here); each image's detector outputs equal those of the image alone (within
    1e-5: batched rows round differently; measured 0 on this CPU), and no image's backbone runs again."""
    torch.manual_seed(0)
    detector = build_grounding_dino(str(write_tiny_grounding_config(tmp_path)), "random")
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((60, 90, 3), (60, 90, 3), (90, 60, 3))]
    _, caption, _ = caption_spans(detector.tokenizer, ["cat", "dining table"])
    expected = [detector.detect_pass(rgb.copy(), caption) for rgb in images]  # copies: encoded alone
    batches: list[int] = []
    detector.model.model.backbone.register_forward_hook(lambda module, inputs, output: batches.append(len(inputs[0])))
    detector.embed_batch(images)
    assert sorted(batches) == [1, 2]
    for rgb, alone in zip(images, expected, strict=True):
        got = detector.detect_pass(rgb, caption)
        torch.testing.assert_close(got.logits, alone.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.pred_boxes, alone.pred_boxes, atol=1e-5, rtol=0)
    assert sorted(batches) == [1, 2]

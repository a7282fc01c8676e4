"""SAM 3 (``--method sam3``): the model against Meta's own code on identical random weights, its
checkpoints, and the labeler on the example data.

Meta's ``sam3`` package (0.1.4, the reference) is installed in CI; these comparisons skip without
it. Meta's code is written for a GPU and runs here as it would there: its image model calls
``Tensor.pin_memory()`` (CUDA only) when it encodes a prompt, which becomes the identity, and its
processor's uint8 resize runs torchvision's GPU path (float32, then rounded; ours always does), not
the AVX2 CPU kernel that rounds one grey level differently in 17% of pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_golden import RunOutputs, _run, tiny_models  # noqa: F401 (tiny_models: a fixture)
from tiny_sam3 import RESOLUTION, meta_tiny_sam3, write_tiny_sam3_config

from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.models.sam3 import ConceptSegmenter, build_sam3, sam3_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_IMAGE = ROOT / "examples" / "voc" / "VOC2012" / "JPEGImages" / "2026_000001.jpg"
PHRASES = ["cat", "dining table", "person", "potted plant"]


@pytest.fixture(scope="module")
def meta_model() -> torch.nn.Module:
    pytest.importorskip("sam3", reason="Meta's sam3 package is the reference (installed in CI)")
    return meta_tiny_sam3()


@pytest.fixture
def meta_checkpoint(meta_model: torch.nn.Module, tmp_path: Path) -> Path:
    """Meta's model saved as ``sam3.pt`` is: the image model under ``detector.``, the video tracker
    under ``tracker.`` (a stand-in key here)."""
    state = {f"detector.{key}": value for key, value in meta_model.state_dict().items()}
    state["tracker.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    path = tmp_path / "sam3.pt"
    torch.save({"model": state}, path)
    return path


def _meta_answers(model: torch.nn.Module, rgb: np.ndarray, phrase: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Meta's ``Sam3Processor`` at its defaults (confidence 0.5) on one phrase, as on a GPU."""
    from sam3.model.sam3_image_processor import Sam3Processor

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(
        "torchvision.transforms.v2.functional._geometry._do_native_uint8_resize_on_cpu", lambda *args: False
    )
    processor = Sam3Processor(model, resolution=RESOLUTION, device="cpu")
    state = processor.set_image(torch.from_numpy(rgb).permute(2, 0, 1))
    return processor.set_text_prompt(phrase, state)


def test_sam3_equals_meta_code_on_the_same_weights(
    meta_model: torch.nn.Module, meta_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Meta's checkpoint, converted on load, in transformers' modules run as ours (4 phrases in
    batches of 2): per phrase the same kept instances at the default thresholds, scores within 1e-4,
    boxes within 0.01 pixel, and the same masks but for near-ties: a pixel may differ only where
    Meta's probability is within 0.005 of the 0.5 cut (random weights amplify float rounding into
    the mask logits, which moves their contour; measured: at most 9 pixels of a mask differ, worst
    mask IoU 0.9969, 6 pixels of a mask of 1,936)."""
    rgb = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))
    segmenter = ConceptSegmenter(build_sam3(str(write_tiny_sam3_config(tmp_path)), str(meta_checkpoint)), 2)
    segmenter.set_image(rgb)
    ours = segmenter.segment(PHRASES)
    kept_somewhere = 0
    for index, phrase in enumerate(PHRASES):
        meta = _meta_answers(meta_model, rgb, phrase, monkeypatch)
        mine = ours.prompts == index
        assert int(mine.sum()) == len(meta["scores"]), phrase
        kept_somewhere += len(meta["scores"])
        torch.testing.assert_close(ours.scores[mine], meta["scores"], atol=1e-4, rtol=0)
        torch.testing.assert_close(ours.boxes[mine], meta["boxes"], atol=1e-2, rtol=0)
        theirs, probability = meta["masks"][:, 0], meta["masks_logits"][:, 0]
        differ = ours.masks[mine] != theirs
        assert bool(((probability[differ] - 0.5).abs() < 0.005).all()), phrase
        overlap = (ours.masks[mine] & theirs).sum((1, 2)) / (ours.masks[mine] | theirs).sum((1, 2)).clamp(min=1)
        assert bool((overlap >= 0.995).all()), (phrase, overlap)
    assert 0 < kept_somewhere < len(PHRASES) * 20  # the threshold kept some queries and dropped others


def test_transformers_checkpoints_load_and_a_batch_of_images_equals_one_at_a_time(
    meta_checkpoint: Path, tmp_path: Path
) -> None:
    """The converted model saved in transformers' layout (safetensors) loads to the same answers, and
    two images encoded as one batch give each image's answers of its own encoding."""
    from safetensors.torch import save_file

    config = str(write_tiny_sam3_config(tmp_path))
    network = build_sam3(config, str(meta_checkpoint))
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, tmp_path / "sam3.safetensors")
    again = ConceptSegmenter(build_sam3(config, str(tmp_path / "sam3.safetensors")))
    segmenter = ConceptSegmenter(network)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (90, 120, 3), dtype=np.uint8), rng.integers(0, 255, (120, 80, 3), dtype=np.uint8)]
    singles = []
    for rgb in images:
        segmenter.set_image(rgb)
        again.set_image(rgb)
        singles.append(segmenter.segment(PHRASES, 0.3))
        torch.testing.assert_close(again.segment(PHRASES, 0.3).scores, singles[-1].scores)
    segmenter.embed_batch(images)
    for rgb, single in zip(images, singles, strict=True):
        segmenter.set_image(rgb)
        batched = segmenter.segment(PHRASES, 0.3)
        assert torch.equal(batched.prompts, single.prompts)
        torch.testing.assert_close(batched.scores, single.scores, atol=1e-5, rtol=0)
        assert (batched.masks != single.masks).float().mean() < 1e-3
        torch.testing.assert_close(segmenter.presence(PHRASES), single.presence, atol=1e-5, rtol=0)


def test_missing_sam3_weights_name_the_file_and_the_licence(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as missing:
        sam3_checkpoint("sam3", "default")
    message = str(missing.value)
    assert "\n" not in message and "sam3.safetensors" in message and "huggingface.co/facebook/sam3" in message
    assert "HF_TOKEN" in message
    with pytest.raises(ConfigError, match="has no published weights"):
        sam3_checkpoint(str(tmp_path / "tiny.json"), "default")
    wrong = tmp_path / "other.pt"
    torch.save({"model": {"backbone.vision_backbone.trunk.pos_embed": torch.zeros(1)}}, wrong)
    with pytest.raises(WeightsError, match="does not load"):
        build_sam3(str(write_tiny_sam3_config(tmp_path)), str(wrong))
    with pytest.raises(ConfigError, match="--sam3-model must be"):
        build_sam3("sam4", "random")
    (tmp_path / "broken.json").write_text(json.dumps({"vision_config": 3}))
    with pytest.raises(ConfigError, match="cannot read SAM 3 config"):
        build_sam3(str(tmp_path / "broken.json"), "random")


@pytest.mark.usefixtures("tiny_models")
def test_sam3_runs_in_batches_write_the_outputs_of_batch_size_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``generate --method sam3 --batch-size 2``: SAM 3's vision encoder takes the 4 example images 2
    at a time, and the masks, saved scores and records are the batch-size-1 ones within the golden
    tolerance (a batch's shape may change the matrix products' blocking and so the last bits, as it
    did for tiny SAM on a Sapphire Rapids Xeon); the saved instances hold the same classes, masks
    that differ on under 1 pixel in 10,000 and float32 scores within 1e-5."""
    encoded: list[int] = []
    real_embed = ConceptSegmenter.embed_batch

    def embed_batch(self: ConceptSegmenter, images: list[np.ndarray]) -> None:
        encoded.append(len(images))
        real_embed(self, images)

    one = _run("sam3", tmp_path / "one", "--save-instances", str(tmp_path / "one" / "instances"))
    monkeypatch.setattr(ConceptSegmenter, "embed_batch", embed_batch)
    two = _run("sam3", tmp_path / "two", "--batch-size", "2", "--save-instances", str(tmp_path / "two" / "instances"))
    assert encoded == [2, 2]
    assert RunOutputs.read(two).differences(RunOutputs.read(one)) == []
    instances = sorted((tmp_path / "two" / "instances").glob("*.npz"))
    assert len(instances) == 4
    for path in instances:
        with np.load(path) as batched, np.load(tmp_path / "one" / "instances" / path.name) as single:
            assert batched.files == single.files
            for key in ("shape", "class_ids"):
                assert np.array_equal(batched[key], single[key]), (path.name, key)
            moved = np.unpackbits(batched["masks"] ^ single["masks"]).mean()
            assert moved < 1e-4, (path.name, moved)
            np.testing.assert_allclose(batched["scores"], single["scores"], atol=1e-5, rtol=0)

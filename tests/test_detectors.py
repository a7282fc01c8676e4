"""OWLv2 and MM-Grounding-DINO behind ``--detector``: their selection rules against the published
post-processing of their transformers ports (``Owlv2ImageProcessor.post_process_object_detection``,
``GroundingDinoProcessor.post_process_grounded_object_detection``) on tiny random models, the text
tokens against transformers' CLIP tokenizer, the input sizes, and runs of Grounded-SAM with each."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_golden import RunOutputs, _files, _run, tiny_models  # noqa: F401 (tiny_models: a fixture)
from tiny_detectors import write_tiny_mm_grounding_config, write_tiny_owl_config

from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.labelers.detection import detect
from pseudolabel.labelers.options import DetectorOptions
from pseudolabel.models.grounding import build_detector, mmdet_input_size
from pseudolabel.models.owl import OwlDetector

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_IMAGE = ROOT / "examples" / "voc" / "VOC2012" / "JPEGImages" / "2026_000001.jpg"
NAMES = ["cat", "dining table", "person"]


def _image() -> np.ndarray:
    return np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))


def _sorted(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    order = torch.argsort(scores, descending=True, stable=True)
    return boxes[order], scores[order], labels[order]


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7])
def test_owlv2_keeps_what_its_processor_keeps(tmp_path: Path, threshold: float) -> None:
    """One pass of all class queries; per patch query the best class (sigmoid of the highest logit)
    above the threshold, boxes in pixels of the original image (the padded square's side): the
    same boxes, scores and classes as ``post_process_object_detection`` on the same outputs (no NMS,
    no cap)."""
    torch.manual_seed(0)
    owl = build_detector(str(write_tiny_owl_config(tmp_path)), "random", "cpu")
    assert isinstance(owl, OwlDetector)
    rgb = _image()
    with torch.no_grad():
        outputs = owl.model(pixel_values=owl.pixel_values(rgb), **owl.text_inputs(NAMES))
    published = owl.processor.post_process_object_detection(outputs, threshold, target_sizes=[rgb.shape[:2]])[0]
    ours = detect(owl, rgb, NAMES, DetectorOptions(box_threshold=threshold, nms_threshold=1.0, max_detections=0))
    assert 0 < len(ours.scores) < outputs.logits.shape[1]  # the threshold keeps some queries, not all
    want = _sorted(published["boxes"], published["scores"], published["labels"])
    got = _sorted(ours.boxes, ours.scores, ours.classes)
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[1], want[1])
    assert torch.equal(got[2], want[2])


def test_owlv2_text_tokens_are_its_clip_tokenizer_s(tmp_path: Path) -> None:
    """open_clip's BPE tokens of the queries equal transformers' ``CLIPTokenizer`` (built from the
    same merges, pad token "!" as OWLv2's hub tokenizer) padded to 16."""
    from open_clip import tokenizer as clip_tokenizer
    from transformers import CLIPTokenizer

    owl = build_detector(str(write_tiny_owl_config(tmp_path)), "random", "cpu")
    bpe = Path(clip_tokenizer.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # the hub files' names
    vocab = {special.get(token, token): index for token, index in clip_tokenizer.SimpleTokenizer().encoder.items()}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    reference = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), pad_token="!")
    long_query = "a photo of a very small red wine glass standing on a wooden dining table in a sunny kitchen"
    names = [*NAMES, "Potted Plant", "tv/monitor", long_query]
    want = reference(names, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    got = owl.text_inputs(names)
    assert torch.equal(got["input_ids"], want["input_ids"])  # the long query: 14 words between start and end
    assert torch.equal(got["attention_mask"], want["attention_mask"])
    assert got["input_ids"][-1, -1] == 49407


def test_mm_grounding_dino_keeps_what_its_processor_keeps(tmp_path: Path) -> None:
    """``--captions per-class`` (groundingdino-py's rule, which transformers' post-processing also
    follows): per class pass, a query whose best token probability is above the box threshold,
    that probability its score, boxes in pixels: equal to
    ``post_process_grounded_object_detection`` on the same outputs."""
    from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor

    torch.manual_seed(0)
    mm = build_detector(str(write_tiny_mm_grounding_config(tmp_path)), "random", "cpu")
    assert type(mm.model).__name__ == "MMGroundingDinoForObjectDetection"
    rgb = _image()
    processor = GroundingDinoProcessor(GroundingDinoImageProcessor(), mm.tokenizer)
    options = DetectorOptions(box_threshold=0.05, captions="per-class", nms_threshold=1.0, max_detections=0)
    ours = detect(mm, rgb, NAMES, options)
    kept = 0
    for index, name in enumerate(NAMES):
        encoding = dict(mm.tokenizer([f"{name}."], return_tensors="pt"))
        pixels = mm.pixel_values(rgb)
        with torch.no_grad():
            outputs = mm.model(pixel_values=pixels, pixel_mask=torch.ones_like(pixels[:, 0], dtype=torch.long),
                               **encoding)  # fmt: skip
        published = processor.post_process_grounded_object_detection(
            outputs, encoding["input_ids"], threshold=0.05, text_threshold=0.25, target_sizes=[rgb.shape[:2]]
        )[0]
        mine = ours.classes == index
        kept += int(mine.sum())
        want = _sorted(published["boxes"], published["scores"], torch.zeros(len(published["scores"])))
        got = _sorted(ours.boxes[mine], ours.scores[mine], torch.zeros(int(mine.sum())))
        torch.testing.assert_close(got[1], want[1])
        torch.testing.assert_close(got[0], want[0], atol=1e-3, rtol=0)
    assert kept > 0


def test_mm_grounding_dino_sees_mmdet_s_input_size() -> None:
    """mmdet's ``FixScaleResize(scale=(800, 1333), keep_ratio=True)``: one scale factor, the smaller
    of 800 / shorter side and 1333 / longer side, each side rounded (``int(x * s + 0.5)``)."""
    assert mmdet_input_size(375, 500) == (800, 1067)  # groundingdino-py truncates: 1066
    assert mmdet_input_size(300, 451) == (800, 1203)  # groundingdino-py: 1202
    assert mmdet_input_size(500, 2000) == (333, 1333)  # the longer side binds
    assert mmdet_input_size(800, 600) == (1067, 800)


def test_detector_checkpoints_and_configs_fail_in_one_line(tmp_path: Path) -> None:
    for name in ("owlv2-b", "owlv2-l", "mm-gdino-t", "mm-gdino-b"):
        with pytest.raises(WeightsError) as missing:
            build_detector(name, "default", "cpu")
        assert "\n" not in str(missing.value) and "missing weights" in str(missing.value)
    with pytest.raises(ConfigError, match="has no published weights"):
        build_detector(str(write_tiny_owl_config(tmp_path)), "default", "cpu")
    (tmp_path / "broken.json").write_text(json.dumps({"model_type": "owlv2", "vision_config": 3}))
    with pytest.raises(ConfigError, match="cannot read"):
        build_detector(str(tmp_path / "broken.json"), "random", "cpu")


@pytest.mark.usefixtures("tiny_models")
@pytest.mark.parametrize(
    ("writer", "thresholds"),
    [(write_tiny_owl_config, ["--box-threshold", "0.6"]),
     (write_tiny_mm_grounding_config, ["--box-threshold", "0.02", "--text-threshold", "0.02"])],
)  # fmt: skip
def test_grounded_sam_runs_with_each_detector_in_batches(writer, thresholds: list[str], tmp_path: Path) -> None:
    """``generate --method grounded-sam --detector <owlv2 | mm-grounding-dino config>`` on the example
    data (thresholds where the tiny random models keep some boxes); ``--batch-size 2`` writes the same
    masks and records."""
    detector = str(writer(tmp_path))
    flags = ["--detector", detector, *thresholds]
    one = _run("grounded-joint", tmp_path / "one", *flags)
    two = _run("grounded-joint", tmp_path / "two", *flags, "--batch-size", "2")
    assert yaml.safe_load((one / "config.yaml").read_text())["generate"]["detector"] == detector
    assert _files(two) == _files(one)
    records = RunOutputs.read(one).records
    assert records == RunOutputs.read(two).records
    assert sum(record["detections"] for record in records) > 0

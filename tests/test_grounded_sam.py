"""Grounded-SAM: caption spans, thresholds, NMS, merge by confidence, the labeler, the CLI, checkpoints."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import score_sample
from PIL import Image
from tiny_clip import write_tiny_config
from tiny_grounding import TINY_GROUNDING, write_tiny_grounding_config
from tiny_sam import build_tiny_sam
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import WeightsError
from pseudolabel.core.masks import read_mask
from pseudolabel.core.prompts import load_prompts
from pseudolabel.core.scoremaps import ScoreMaps, decode
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.detection import (
    Detections,
    caption_spans,
    centre_to_corners,
    class_probabilities,
    detect,
    select_class_detections,
    select_detections,
)
from pseudolabel.labelers.grounded_sam import GroundedSamLabeler, GroundedSamOptions
from pseudolabel.labelers.options import DetectorOptions, PromptingOptions
from pseudolabel.models.grounding import (
    VOCAB_FILE,
    bert_tokenizer,
    build_grounding_dino,
    detector_config,
    input_size,
    load_detector_weights,
)
from pseudolabel.models.grounding_convert import convert_original_state_dict
from pseudolabel.models.sam import merge_by_confidence
from pseudolabel.runner.manifest import read_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
VOC = load_prompts("voc")
CLASS_ID = {entry.name: index for index, entry in enumerate(VOC.classes)}
BERT_BASE_UNCASED_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
runner = CliRunner()


def test_shipped_vocabulary_is_bert_base_uncased() -> None:
    import pseudolabel.models

    data = gzip.decompress((Path(pseudolabel.models.__file__).parent / VOCAB_FILE).read_bytes())
    assert hashlib.sha256(data).hexdigest() == BERT_BASE_UNCASED_VOCAB_SHA256
    assert len(bert_tokenizer()) == 30522


def test_caption_spans_cover_each_name_exactly() -> None:
    tokenizer = bert_tokenizer()
    caption, encoding, spans = caption_spans(tokenizer, ["Cat", "dining table", "potted plant"])
    assert caption == "cat . dining table . potted plant ."
    ids = encoding["input_ids"][0]
    assert [tokenizer.decode(ids[span]) for span in spans] == ["cat", "dining table", "potted plant"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_class_probability_is_the_best_token_of_its_span_and_thresholds_are_strict() -> None:
    tokens = torch.tensor([
        [0.0, 0.9, 0.1, 0.0, 0.0],  # query 0: class 0
        [0.0, 0.1, 0.2, 0.35, 0.3],  # query 1: class 1 (span 3..4), class 0 below text threshold
        [0.0, 0.28, 0.0, 0.26, 0.0],  # query 2: best 0.28 < box threshold -> dropped
        [0.0, 0.5, 0.0, 0.27, 0.0],  # query 3: both classes are above the text threshold
        [0.0, 0.3, 0.0, 0.25, 0.0],  # query 4: best exactly 0.3 -> dropped (groundingdino-py uses >)
        [0.0, 0.6, 0.0, 0.25, 0.0],  # query 5: class 1 exactly at the text threshold -> not detected
    ])  # fmt: skip
    probs = class_probabilities(tokens, [[1, 2], [3, 4]])
    torch.testing.assert_close(probs[:4], torch.tensor([[0.9, 0.0], [0.2, 0.35], [0.28, 0.26], [0.5, 0.27]]))
    boxes = torch.arange(6, dtype=torch.float)[:, None] * 20 + torch.tensor([0.0, 0, 10, 10])
    found = select_detections(probs, boxes, box_threshold=0.3, text_threshold=0.25, nms_threshold=0.7)
    got = sorted(zip(found.queries.tolist(), found.classes.tolist(), found.scores.tolist(), strict=True))
    expected = [(0, 0, 0.9), (1, 1, 0.35), (3, 0, 0.5), (3, 1, 0.27), (5, 0, 0.6)]
    assert [(q, c) for q, c, _ in got] == [(q, c) for q, c, _ in expected]
    np.testing.assert_allclose([s for *_, s in got], [s for *_, s in expected], rtol=1e-6)


def test_per_class_box_score_is_the_best_of_all_caption_tokens() -> None:
    """groundingdino-py ``predict``: ``logits.max(dim=1)[0] > box_threshold`` over every token, the
    [CLS], [SEP] and the period included, and that maximum is the returned score."""
    cat = torch.tensor([
        [0.1, 0.2, 0.7, 0.0],  # [CLS] cat . [SEP]: only the period is high -> kept with 0.7
        [0.3, 0.1, 0.1, 0.0],  # best exactly 0.3 (the [CLS]) -> dropped
        [0.35, 0.1, 0.1, 0.2],  # [CLS] 0.35 -> kept
    ])  # fmt: skip
    dog = torch.tensor([[0.0, 0.0, 0.0, 0.9], [0.0, 0.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    found = select_class_detections([cat, dog], [boxes, boxes], box_threshold=0.3, nms_threshold=1.0)
    got = sorted(zip(found.queries.tolist(), found.classes.tolist(), found.scores.tolist(), strict=True))
    assert [(q, c) for q, c, _ in got] == [(0, 0), (2, 0), (3, 1)]  # dog's query 0 is query 3 overall
    np.testing.assert_allclose([s for *_, s in got], [0.7, 0.35, 0.9], rtol=1e-6)
    # the same box found for two classes stays a box of each (the reference keeps both masks)
    assert found.boxes[found.queries == 3].tolist() == [[0.0, 0, 10, 10]]


def test_nms_is_per_class() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 30, 40, 40]], dtype=torch.float)
    probs = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.0, 0.6], [0.7, 0.0]])
    found = select_detections(probs, boxes, 0.3, 0.25, nms_threshold=0.5)
    # query 1 overlaps query 0 (IoU 0.82, same class) and goes; query 2 overlaps as well but is another class
    assert sorted(found.queries.tolist()) == [0, 2, 3]
    assert sorted(select_detections(probs, boxes, 0.3, 0.25, nms_threshold=1.0).queries.tolist()) == [0, 1, 2, 3]


def test_centre_boxes_become_unclipped_pixel_corners() -> None:
    """SAM_WSSS scales cx, cy, w, h by the image size and does not clip (groundingdino-py neither)."""
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.95, 0.1, 0.2, 0.4]])
    torch.testing.assert_close(
        centre_to_corners(boxes, height=100, width=200),
        torch.tensor([[80.0, 30.0, 120.0, 70.0], [170.0, -10.0, 210.0, 30.0]]),
    )


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    # (height, width) that groundingdino-py 0.4.0's load_image transform gives (run on these sizes)
    [(451, 300, (800, 1202)), (300, 451, (1202, 800)), (2000, 500, (333, 1332)), (500, 2000, (1332, 333)),
     (800, 600, (800, 1066)), (1333, 800, (800, 1333)), (1000, 1000, (800, 800))],
)  # fmt: skip
def test_detector_input_size_truncates_like_groundingdino(width: int, height: int, expected: tuple) -> None:
    assert input_size(height, width) == expected


def test_detector_pixels_are_the_reference_transform(tmp_path: Path) -> None:
    """groundingdino-py: torchvision ``resize`` of the PIL image (bilinear), ``to_tensor``, ``normalize``."""
    import torchvision.transforms.functional as TF

    detector = build_grounding_dino(str(write_tiny_grounding_config(tmp_path)), "random")
    rgb = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    pil = Image.fromarray(rgb)
    expected = TF.normalize(TF.to_tensor(TF.resize(pil, [800, 1202])), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    got = detector.pixel_values(rgb)
    assert got.shape == (1, 3, 800, 1202)
    torch.testing.assert_close(got[0], expected, atol=1e-6, rtol=0)


def test_per_class_detection_equals_groundingdino_predict_on_each_caption(tmp_path: Path) -> None:
    """The tiny random detector, run the way SAM_WSSS runs it: per class, caption "name.", the query's
    best token probability over the whole caption > 0.5, boxes scaled by W, H and not clipped. The
    image backbone runs once for both captions."""
    torch.manual_seed(0)
    detector = build_grounding_dino(str(write_tiny_grounding_config(tmp_path)), "random")
    rgb = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    names = ["wild bird", "dining table"]
    options = DetectorOptions(box_threshold=0.5, nms_threshold=1.0, captions="per-class", max_detections=0)
    backbone_runs = []
    hook = detector.model.model.backbone.register_forward_hook(lambda *args: backbone_runs.append(1))
    found = detect(detector, rgb, names, options)
    hook.remove()
    assert backbone_runs == [1]
    pixels = detector.pixel_values(rgb)
    expected_boxes, expected_scores, expected_classes = [], [], []
    for index, name in enumerate(names):
        tokens = detector.tokenizer([name + "."], return_tensors="pt")
        with torch.no_grad():
            out = detector.model(pixel_values=pixels, pixel_mask=torch.ones_like(pixels[:, 0]).long(), **tokens)
        logits, boxes = out.logits.sigmoid()[0], out.pred_boxes[0]
        keep = logits.max(dim=1)[0] > 0.5
        boxes = boxes[keep] * torch.tensor([90, 60, 90, 60])
        boxes[:, :2] -= boxes[:, 2:] / 2
        boxes[:, 2:] += boxes[:, :2]
        expected_boxes.append(boxes)
        expected_scores.append(logits.max(dim=1)[0][keep])
        expected_classes += [index] * int(keep.sum())
    assert 0 < len(found.scores) < 2 * TINY_GROUNDING["num_queries"]  # the threshold splits the queries
    order = torch.argsort(found.queries)
    assert found.classes[order].tolist() == expected_classes
    torch.testing.assert_close(found.scores[order], torch.cat(expected_scores))
    torch.testing.assert_close(found.boxes[order], torch.cat(expected_boxes))


def test_detector_names_are_sam_wssss_renamed_voc_classes() -> None:
    ids = [CLASS_ID[name] for name in ("bird", "diningtable", "tvmonitor", "aeroplane", "pottedplant")]
    assert VOC.prompt_names(ids, "detector") == ["wild bird", "dining table", "monitor/tv", "aeroplane", "pottedplant"]
    assert VOC.prompt_names(ids, "none") == ["bird", "diningtable", "tvmonitor", "aeroplane", "pottedplant"]


def test_overlaps_go_to_the_more_confident_mask_not_the_higher_class() -> None:
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, 0:6, 0:6] = True  # cat (channel 1), confident
    masks[1, 3:9, 3:9] = True  # dog (channel 2), less confident, overlaps the cat
    masks[2, 0:2, 8:10] = True  # another dog mask, as confident as the cat there is nothing to contest
    confidences = torch.tensor([0.8, 0.5, 0.78])
    scores = merge_by_confidence(masks, confidences, torch.tensor([1, 2, 2]), 3)
    labels = decode(ScoreMaps(scores.numpy(), (0, 8, 12)), unsure_margin=0.05)
    assert labels[4, 4] == 8  # overlap: cat 0.8 beats dog 0.5 although dog has the higher id
    assert labels[7, 7] == 12 and labels[9, 0] == 0 and labels[0, 9] == 12
    assert scores[0, 9, 0] == 1 and scores[0, 4, 4] == 0  # background only where nothing is covered
    close = merge_by_confidence(masks[:2], torch.tensor([0.8, 0.78]), torch.tensor([1, 2]), 3)
    contested = decode(ScoreMaps(close.numpy(), (0, 8, 12)), unsure_margin=0.05)
    assert contested[4, 4] == 255 and contested[1, 1] == 8 and contested[8, 8] == 12


class FakeSam:
    """BoxMaskPredictor stand-in: the mask of a box is the box, its IoU score fixed per box."""

    def __init__(self, ious: list[float]) -> None:
        self.ious = ious
        self.calls: list[torch.Tensor] = []
        self.shape = (0, 0)

    def set_image(self, rgb: np.ndarray) -> None:
        self.shape = rgb.shape[:2]

    def predict_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(boxes)
        masks = torch.zeros(len(boxes), *self.shape, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.round().long().tolist(), strict=True):
            mask[y0:y1, x0:x1] = True
        return masks, torch.tensor(self.ious[: len(boxes)])


def test_labeler_prompts_sam_once_per_box_and_scores_by_box_times_mask(monkeypatch) -> None:
    found = Detections(
        boxes=torch.tensor([[0, 0, 20, 20], [10, 10, 40, 30], [10, 10, 40, 30]], dtype=torch.float),
        scores=torch.tensor([0.9, 0.6, 0.4]),
        classes=torch.tensor([0, 1, 0]),
        queries=torch.tensor([3, 7, 7]),  # query 7 detected both classes
    )
    monkeypatch.setattr("pseudolabel.labelers.grounded_sam.detect", lambda *args: found)
    sam = FakeSam([0.5, 1.0])
    labeler = GroundedSamLabeler(object(), sam, VOC)  # type: ignore[arg-type]
    maps, record = score_sample(labeler, Sample("x", np.zeros((30, 50, 3), np.uint8), (8, 12), None))
    assert len(sam.calls) == 1 and len(sam.calls[0]) == 2  # one batched call, one prompt per distinct box
    assert maps.class_ids == (0, 8, 12) and record["detections"] == 3
    assert maps.scores[1, 5, 5] == pytest.approx(0.45)  # cat box: 0.9 x 0.5
    assert maps.scores[1, 25, 35] == pytest.approx(0.4) and maps.scores[2, 25, 35] == pytest.approx(0.6)
    labels = decode(maps, 0.05)
    assert labels[5, 5] == 8 and labels[25, 35] == 12 and labels[29, 49] == 0
    assert labels[15, 15] == 12  # cat 0.45 vs dog 0.6 where both boxes cover


def test_an_image_without_classes_is_all_background(monkeypatch) -> None:
    monkeypatch.setattr("pseudolabel.labelers.grounded_sam.detect", lambda *a: pytest.fail("no detection expected"))
    labeler = GroundedSamLabeler(object(), FakeSam([]), VOC)  # type: ignore[arg-type]
    maps, record = score_sample(labeler, Sample("x", np.zeros((4, 5, 3), np.uint8), (), None))
    assert maps.class_ids == (0,) and decode(maps).max() == 0 and record["detections"] == 0


def test_original_checkpoint_keys_map_onto_the_transformers_model() -> None:
    """Every key of the real Swin-T checkpoint layout (from groundingdino-py) lands on a parameter of the
    same shape, and every parameter but Swin's unused final norm is covered."""
    from transformers import GroundingDinoForObjectDetection

    with gzip.open(FIXTURES / "groundingdino_swint_ogc_keys.json.gz", "rt") as handle:
        shapes = json.load(handle)["keys"]
    original = {f"module.{key}": torch.empty(shape, device="meta") for key, shape in shapes.items()}
    converted = convert_original_state_dict(original)
    with torch.device("meta"):
        model = GroundingDinoForObjectDetection(detector_config("swint"))
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in converted.items()} == {
        key: shape for key, shape in expected.items() if ".swin.layernorm." not in key
    }


def test_transformers_state_dict_loads_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_GROUNDING))
    torch.manual_seed(0)
    first = build_grounding_dino(str(config), "random")
    torch.save({"model": first.model.state_dict()}, tmp_path / "hf.pth")
    second = build_grounding_dino(str(config), str(tmp_path / "hf.pth"))
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    broken = {k: v for k, v in first.model.state_dict().items() if "decoder" not in k}
    with pytest.raises(WeightsError, match=r"do not fit the --detector model: \d+ missing keys"):
        load_detector_weights(second.model, broken, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="do not fit the --detector model"):
        build_grounding_dino("swint", str(tmp_path / "hf.pth"))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connection fails at once."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _generate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str, dataset: str = "voc"):
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
    root = EXAMPLES / "voc" / "VOC2012"
    args = ["generate", "--dataset", "voc", "--root", str(root), "--split", "train"]
    if dataset == "folder":  # a plain folder of images, no labels file
        args = ["generate", "--dataset", "folder", "--root", str(root / "JPEGImages"), "--prompts", "voc"]
    args += ["--method", "grounded-sam", "--detector", str(write_tiny_grounding_config(tmp_path))]
    args += ["--detector-weights", "random", "--sam-checkpoint", "random", "--device", "cpu", "--num-workers", "0"]
    args += ["--box-threshold", "0", "--text-threshold", "0", "--nms-threshold", "0.3"]
    args += ["--clip-model", str(write_tiny_config(tmp_path)), "--clip-weights", "random"]
    return runner.invoke(app, [*args, *extra])


@pytest.mark.usefixtures("no_network")
def test_generate_grounded_sam_with_exclusion_writes_masks_and_records(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    result = _generate(tmp_path, monkeypatch, "--out", str(out), "--exclude", "--exclusion-threshold", "0",
                       "--save-scores", str(tmp_path / "scores"), "--synonyms", "pole")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 images labelled" in result.output and "exclusion:" in result.output
    records = read_manifest(out / "manifest.jsonl")
    assert [r["status"] for r in records] == ["ok"] * 4
    for record in records:
        allowed = {0, 255, *(CLASS_ID[name] for name in record["classes"])}
        assert set(np.unique(read_mask(out / f"{record['id']}.png"))) <= allowed
        assert record["detections"] > 0 and "detector_s" in record and "sam_s" in record
        assert set(record["synonyms"]) == set(record["classes"])  # POLE chose a name per class
        # threshold 0: every (mask, candidate class) pair is recorded with its probabilities
        assert all(0 <= e["p_in"] <= 1 and e["p_ex"] >= 0 for e in record["exclusions"])
        assert {e["region"].split(" (")[0] for e in record["exclusions"]} <= {f"mask {i}" for i in range(100)}
    for record in records:
        with Image.open(out / f"{record['id']}.png") as image:
            assert image.mode == "P"
    assert len(list((tmp_path / "scores").glob("*.npz"))) == 4


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("dataset", ["voc", "folder"])
def test_generate_grounded_sam_zero_shot_needs_no_labels(tmp_path: Path, monkeypatch, dataset: str) -> None:
    out = tmp_path / "zs"
    extra = ["--out", str(out), "--labels", "none", "--zero-shot-top-k", "2", "--exclude"]
    result = _generate(tmp_path, monkeypatch, *extra, dataset=dataset)
    assert result.exit_code == 0, result.output
    records = read_manifest(out / "manifest.jsonl")
    assert len(records) == 4
    for record in records:
        assert 1 <= len(record["candidates"]) <= 2 and record["status"] == "ok" and "exclusions" in record
        class_ids = {CLASS_ID[name] for name in record["classes"]}
        assert set(np.unique(read_mask(out / f"{record['id']}.png"))) <= {0, 255, *class_ids}


def test_pole_picks_names_on_detected_regions_and_detects_again(monkeypatch) -> None:
    from tiny_clip import tiny_clip

    first = Detections(torch.tensor([[0.0, 0, 20, 20]]), torch.tensor([0.9]), torch.tensor([0]), torch.tensor([1]))
    second = Detections(torch.tensor([[5.0, 5, 25, 25]]), torch.tensor([0.8]), torch.tensor([0]), torch.tensor([4]))
    captions: list[list[str]] = []

    def fake_detect(detector, rgb, names, options):
        captions.append(names)
        return first if len(captions) == 1 else second

    monkeypatch.setattr("pseudolabel.labelers.grounded_sam.detect", fake_detect)
    regions_seen: list[torch.Tensor] = []

    def fake_choose(clip, rgb, regions, entries, template, count):
        from pseudolabel.labelers.pole import SynonymChoice

        regions_seen.append(regions)
        return [SynonymChoice(entries[0].name, "kitty", ("cat", "kitty"), (0.1, 0.2))]

    monkeypatch.setattr("pseudolabel.labelers.pole.choose_synonyms", fake_choose)
    sam = FakeSam([1.0])
    options = GroundedSamOptions(prompting=PromptingOptions(synonyms="pole"))
    labeler = GroundedSamLabeler(object(), sam, VOC, options, clip=tiny_clip())  # type: ignore[arg-type]
    maps, record = score_sample(labeler, Sample("x", np.zeros((30, 30, 3), np.uint8), (8,), None))
    assert captions == [["cat"], ["kitty"]] and record["synonyms"] == {"cat": "kitty"}
    assert regions_seen[0][0, 10, 10] == 1 and regions_seen[0][0, 25, 25] == 0  # the cat's first mask
    assert maps.scores[1, 22, 22] == pytest.approx(0.8) and maps.scores[1, 2, 2] == 0  # second detection only


def test_grounded_sam_reports_missing_detector_weights(tmp_path: Path) -> None:
    args = ["generate", "--dataset", "voc", "--root", str(EXAMPLES / "voc" / "VOC2012"), "--out", str(tmp_path / "p")]
    result = runner.invoke(app, [*args, "--method", "grounded-sam", "--device", "cpu", "--num-workers", "0"])
    assert result.exit_code == 1
    assert "groundingdino_swint_ogc.pth" in result.output and "models download gdino_swint" in result.output


def test_detector_names_are_refused_for_cams(tmp_path: Path) -> None:
    args = ["generate", "--dataset", "voc", "--root", str(EXAMPLES / "voc" / "VOC2012"), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, "--synonyms", "detector", "--clip-weights", "random", "--device", "cpu"])
    assert result.exit_code == 1 and "--synonyms detector" in result.output and "grounded-sam" in result.output
    assert not (tmp_path / "o" / "manifest.jsonl").exists()


@pytest.mark.parametrize("captions", ["joint", "per-class"])
def test_max_detections_keeps_the_best_scoring_boxes_after_nms(tmp_path: Path, captions: str) -> None:
    """Random weights put hundreds of boxes over any threshold; the cap keeps the best ones."""
    torch.manual_seed(0)
    detector = build_grounding_dino(str(write_tiny_grounding_config(tmp_path)), "random")
    rgb = np.random.default_rng(2).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    names = ["cat", "dining table"]
    loose = {"box_threshold": 0.0, "text_threshold": 0.0, "nms_threshold": 0.9, "captions": captions}
    every = detect(detector, rgb, names, DetectorOptions(**loose, max_detections=0))
    capped = detect(detector, rgb, names, DetectorOptions(**loose, max_detections=7))
    assert len(every.scores) > 7 and len(capped.scores) == 7
    best = torch.argsort(every.scores, descending=True, stable=True)[:7]
    torch.testing.assert_close(capped.scores, every.scores[best])
    torch.testing.assert_close(capped.boxes, every.boxes[best])
    assert capped.classes.tolist() == every.classes[best].tolist()

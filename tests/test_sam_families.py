"""HQ-SAM and SAM 2.1 behind the one SAM contract equal their official code on identical random
weights: our batched embeddings and batched prompts against the official predictors one prompt at
a time (masks IoU >= 0.999, predicted IoUs within 1e-4), and our automatic masks against the
official generators at their defaults (same number, each mask IoU >= 0.999, in the same order)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_sam import make_confident, tiny_hq_sam, tiny_sam, tiny_sam2
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import WeightsError
from pseudolabel.models.hq_sam import HqSamPrompter, build_hq_sam
from pseudolabel.models.sam import SamPrompter, load_sam_state
from pseudolabel.runner.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_VOC = ROOT / "examples" / "voc" / "VOC2012"
COARSE_MASKS = ROOT / "examples" / "voc" / "coarse_masks"
REFINE_EXAMPLE = ["refine", "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--masks", str(COARSE_MASKS)]
REFINE_EXAMPLE += ["--refine", "sam"]
BOXES = [[10.0, 8.0, 70.0, 60.0], [40.0, 30.0, 120.0, 90.0], [0.0, 0.0, 127.0, 95.0]]
POINTS = [[20.0, 15.0], [64.0, 48.0], [110.0, 80.0], [5.0, 90.0]]
runner = CliRunner()


def _images() -> tuple[np.ndarray, np.ndarray]:
    """Two images of different sizes with smooth blobs (masks then vary with the prompt)."""
    rng = np.random.default_rng(3)
    images = []
    for height, width in ((96, 128), (72, 100)):
        yy, xx = np.mgrid[0:height, 0:width]
        image = np.zeros((height, width, 3))
        for _ in range(4):
            cy, cx, colour = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0, 255, 3)
            image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 300.0)[..., None] * colour
        images.append(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
    return images[0], images[1]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _assert_same(ours: tuple[torch.Tensor, torch.Tensor], official: list[tuple[np.ndarray, float]]) -> None:
    masks, ious = ours
    assert len(masks) == len(official)
    for mask, iou, (expected_mask, expected_iou) in zip(masks.cpu().numpy(), ious.tolist(), official, strict=True):
        assert _iou(mask, expected_mask) >= 0.999
        assert abs(iou - expected_iou) <= 1e-4
    assert len({m.tobytes() for m in masks.cpu().numpy()}) > 1  # the prompts gave different masks


def _assert_same_automatic(prompter: object, image: np.ndarray, official: object) -> None:
    """``prompter``'s generator has every setting of ``official`` (the package's generator at its
    defaults) and gives the same masks on ``image``."""
    generator = prompter._make_generator()
    assert type(generator) is type(official)
    settings = {key: value for key, value in vars(official).items() if key != "predictor"}
    assert {key: value for key, value in vars(generator).items() if key != "predictor"}.keys() == settings.keys()
    for key, value in settings.items():
        assert (
            np.array_equal(getattr(generator, key), value)
            if isinstance(value, (np.ndarray, list))
            else (getattr(generator, key) == value)
        ), key
    ours, official = prompter.automatic_masks(image), official.generate(image)
    assert len(ours) == len(official) > 0
    for mask, proposal in zip(ours, official, strict=True):
        assert _iou(mask, proposal["segmentation"]) >= 0.999


@pytest.mark.parametrize("hq_token_only", [False, True])
def test_hq_sam_boxes_and_points_equal_sysCV_predictor(hq_token_only: bool) -> None:
    from segment_anything_hq import SamPredictor

    first, second = _images()
    sam = tiny_hq_sam()
    ours = HqSamPrompter(sam, batch=2, hq_token_only=hq_token_only)
    ours.embed_batch([first, second])  # batched embeddings, then the second image's
    ours.set_image(second)
    box_masks = ours.predict_boxes(torch.tensor(BOXES))
    point_masks = ours.predict_points(np.array(POINTS))

    official = SamPredictor(sam)
    official.set_image(second)
    by_box, by_point = [], []
    for box in BOXES:
        masks, ious, _ = official.predict(box=np.array(box), multimask_output=False, hq_token_only=hq_token_only)
        by_box.append((masks[0], float(ious[0])))
    for point in POINTS:
        masks, ious, _ = official.predict(
            point_coords=np.array([point]), point_labels=np.array([1]), multimask_output=False,
            hq_token_only=hq_token_only,
        )  # fmt: skip
        by_point.append((masks[0], float(ious[0])))
    _assert_same(box_masks, by_box)
    _assert_same(point_masks, by_point)


def test_hq_token_only_changes_the_masks() -> None:
    image = _images()[0]
    masks = []
    for hq_token_only in (False, True):
        prompter = HqSamPrompter(tiny_hq_sam(), hq_token_only=hq_token_only)
        prompter.set_image(image)
        masks.append(prompter.predict_boxes(torch.tensor(BOXES))[0])
    assert not torch.equal(*masks)


def test_hq_sam_automatic_masks_equal_sysCV_generator() -> None:
    from segment_anything_hq import SamAutomaticMaskGenerator

    image = _images()[0]
    sam = make_confident(tiny_hq_sam(), ("output_hypernetworks_mlps", "hf_mlp"))
    _assert_same_automatic(HqSamPrompter(sam), image, SamAutomaticMaskGenerator(sam))


def test_sam_automatic_masks_are_seplS_generator() -> None:
    """SAM's published generator defaults are the settings SEPL runs it with."""
    from segment_anything import SamAutomaticMaskGenerator

    image = _images()[0]
    sam = make_confident(tiny_sam())
    sepl = SamAutomaticMaskGenerator(
        sam, points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95, box_nms_thresh=0.7
    )
    _assert_same_automatic(SamPrompter(sam), image, sepl)


def test_sam2_boxes_and_points_equal_metas_predictor() -> None:
    pytest.importorskip("sam2", reason="Meta's sam2 package is an optional extra")
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from pseudolabel.models.sam2_image import Sam2Prompter

    first, second = _images()
    model = tiny_sam2()
    ours = Sam2Prompter(model, batch=2)
    ours.embed_batch([first, second])
    ours.set_image(second)
    box_masks = ours.predict_boxes(torch.tensor(BOXES))
    point_masks = ours.predict_points(np.array(POINTS))

    official = SAM2ImagePredictor(model)
    official.set_image(second)
    by_box = []
    for box in BOXES:  # Grounded-SAM-2's call, one box at a time
        masks, ious, _ = official.predict(box=np.array(box), multimask_output=False)
        by_box.append((masks[0] > 0, float(ious[0])))
    by_point = []
    for point in POINTS:
        masks, ious, _ = official.predict(
            point_coords=np.array([point]), point_labels=np.array([1]), multimask_output=False
        )
        by_point.append((masks[0] > 0, float(ious[0])))
    _assert_same(box_masks, by_box)
    _assert_same(point_masks, by_point)


def test_sam2_automatic_masks_equal_metas_generator() -> None:
    pytest.importorskip("sam2", reason="Meta's sam2 package is an optional extra")
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from pseudolabel.models.sam2_image import Sam2Prompter

    image = _images()[0]
    model = make_confident(tiny_sam2())
    _assert_same_automatic(Sam2Prompter(model), image, SAM2AutomaticMaskGenerator(model))


def test_checkpoints_load_into_their_own_model_only(tmp_path: Path) -> None:
    own, other = tmp_path / "hq.pth", tmp_path / "sam.pth"
    torch.save(tiny_hq_sam().state_dict(), own)
    torch.save(tiny_sam().state_dict(), other)
    torch.manual_seed(1)
    fresh = tiny_hq_sam()
    load_sam_state(fresh, own, "hq_vit_b")
    saved = tiny_hq_sam().state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in fresh.state_dict().items())
    with pytest.raises(WeightsError, match=r"does not load into hq_vit_b: missing keys \['mask_decoder.hf_token"):
        load_sam_state(fresh, other, "hq_vit_b")


@pytest.mark.parametrize(
    ("variant", "filename"), [("hq_vit_h", "sam_hq_vit_h.pth"), ("sam2.1_hiera_l", "sam2.1_hiera_large.pt")]
)
def test_a_missing_checkpoint_is_one_line_naming_the_file(variant: str, filename: str) -> None:
    if variant.startswith("sam2"):
        pytest.importorskip("sam2", reason="Meta's sam2 package is an optional extra")
        from pseudolabel.models.sam2_image import build_sam2_model as build
    else:
        build = build_hq_sam
    with pytest.raises(WeightsError) as error:
        build(variant, "default", "cpu")
    assert filename in str(error.value) and "\n" not in str(error.value)


def test_hq_token_only_belongs_to_hq_sam() -> None:
    result = runner.invoke(app, [*REFINE_EXAMPLE, "--out", "unused", "--sam", "vit_b", "--hq-token-only"])
    assert result.exit_code != 0
    owners = "hq_vit_b, hq_vit_h, hq_vit_l, hq_vit_tiny"
    assert f"--hq-token-only is an option of --sam {owners}, not of vit_b" in result.output


@pytest.mark.parametrize("mode", ["points", "auto"])
def test_refine_with_hq_vit_h_on_the_example_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    built: list[HqSamPrompter] = []
    real = HqSamPrompter.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr("pseudolabel.models.hq_sam.build_hq_sam", lambda variant, checkpoint, device: tiny_hq_sam())
    monkeypatch.setattr(HqSamPrompter, "__init__", spy)
    out = tmp_path / "out"
    args = [*REFINE_EXAMPLE, "--out", str(out), "--sam", "hq_vit_h", "--sam-mode", mode, "--grid", "8"]
    args += ["--hq-token-only", "--sam-checkpoint", "random", "--device", "cpu", "--num-workers", "0", "--limit", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in read_manifest(out / "manifest.jsonl")] == ["ok", "ok"]
    assert len(built) == 1 and built[0].hq_token_only
    assert "hq-token-only: true" in (out / "config.yaml").read_text()


def test_the_api_refines_with_hq_sam_and_its_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from pseudolabel.api import create_refiner
    from pseudolabel.core.scoremaps import ScoreMaps
    from pseudolabel.core.stage_record import StageRecord
    from pseudolabel.models.hq_sam_family import HqSamOptions
    from pseudolabel.settings import ModelSettings

    monkeypatch.setattr("pseudolabel.models.hq_sam.build_hq_sam", lambda variant, checkpoint, device: tiny_hq_sam())
    models = ModelSettings(sam="hq_vit_l", sam_checkpoint="random", components={"hq_vit_l": HqSamOptions(True)})
    refiner = create_refiner("sam", models=models)
    assert isinstance(refiner.prompter, HqSamPrompter) and refiner.prompter.hq_token_only
    image = _images()[0]
    scores = np.zeros((2, *image.shape[:2]), np.float32)
    scores[0], scores[1, 20:70, 30:100] = 1.0, 2.0
    record = StageRecord()
    refined = refiner(image, ScoreMaps(scores, (0, 8)), record)
    assert refined.scores.shape == scores.shape and "sam_masks_kept" in record


def test_sam2_without_its_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pseudolabel.core.errors import ConfigError
    from pseudolabel.models.sam2_image import build_sam2_model

    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"--sam sam2.1_hiera_s needs Meta's SAM 2 code: pip install --no-build-isol"):
        build_sam2_model("sam2.1_hiera_s", "random")

"""DenseCRF and SAM refinement: sharpening, 255 handling, point-grid and merge logic, the refine command."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import make_voc
from tiny_sam import tiny_sam
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.core.masks import read_mask, write_mask
from pseudolabel.core.scoremaps import ScoreMaps, decode, from_label_map, save_scores
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.evaluate.metrics import Counts, count_pair, summarize
from pseudolabel.models.sam import SamPrompter, build_sam
from pseudolabel.refiners.crf import CrfRefiner, crf_refine
from pseudolabel.refiners.options import CrfOptions
from pseudolabel.refiners.sam import (
    Candidates,
    SamRefineOptions,
    SamRefiner,
    grid_points,
    paint_candidates,
    point_candidates,
    points_by_class,
    sepl_assign,
)
from pseudolabel.runner.manifest import read_manifest

runner = CliRunner()


def synthetic_scene(seed: int, height: int = 375, width: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """A VOC-sized scene: two flat-coloured objects with noise on a flat background (rgb uint8, GT uint8)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((height, width), np.uint8)
    cv2.ellipse(gt, (width * 3 // 10, height // 2), (width // 7, height // 5), 20, 0, 360, 8, -1)
    cv2.rectangle(gt, (width * 6 // 10, height // 4), (width * 17 // 20, height * 3 // 4), 15, -1)
    colours = {0: (90, 140, 60), 8: (200, 60, 40), 15: (40, 70, 190)}
    rgb = np.zeros((height, width, 3), np.float64)
    for class_id, colour in colours.items():
        rgb[gt == class_id] = colour
    rgb += rng.normal(0, 8, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), gt


def refine_to_labels(refiner, rgb: np.ndarray, maps: ScoreMaps) -> tuple[np.ndarray, StageRecord]:
    """A refiner's output decoded, and what it recorded."""
    record = StageRecord()
    return decode(refiner(rgb, maps, record)), record


def dilate(labels: np.ndarray, pixels: int) -> np.ndarray:
    return cv2.dilate(labels, np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8))


def _scores(gt: np.ndarray, pred: np.ndarray) -> dict:
    counts = Counts(21)
    counts.add(count_pair(gt, pred, 21))
    return summarize(counts)


@pytest.mark.parametrize("pixels", [4, 8, 12])
def test_crf_sharpens_a_dilated_mask(pixels: int) -> None:
    rgb, gt = synthetic_scene(pixels)
    coarse = dilate(gt, pixels)
    refined, record = refine_to_labels(CrfRefiner(), rgb, from_label_map(coarse, (0, 8, 15), 0.7))
    before, after = _scores(gt, coarse), _scores(gt, refined)
    assert after["miou"] >= 0.95 and after["mbiou"] >= 0.60
    assert after["mbiou"] >= before["mbiou"] + 0.2
    assert record["crf_s"] >= 0


def test_unsure_input_pixels_are_unknown_not_a_class() -> None:
    rgb, gt = synthetic_scene(1, 120, 160)
    band = cv2.dilate(gt, np.ones((7, 7), np.uint8)) != cv2.erode(gt, np.ones((7, 7), np.uint8))
    with_unknown = np.where(band, 255, gt).astype(np.uint8)
    maps = from_label_map(with_unknown, (0, 8, 15), 0.7)
    assert maps.class_ids == (0, 8, 15)
    np.testing.assert_allclose(maps.scores[:, band], 1 / 3)
    np.testing.assert_allclose(maps.scores.sum(axis=0), 1.0, rtol=1e-6)
    refined = decode(crf_refine(rgb, maps))
    assert not (refined == 255).any()  # every unknown pixel gets a class...
    assert (refined[band] == gt[band]).mean() > 0.95  # ...the right one, from the image edges
    strict = refine_to_labels(CrfRefiner(CrfOptions(min_confidence=0.999999)), rgb, maps)[0]
    assert (strict == 255).any()


def test_grid_points_are_cell_centres() -> None:
    points = grid_points(100, 200, 4)
    assert points.shape == (16, 2)
    assert points[0].tolist() == [25.0, 12.5] and points[-1].tolist() == [175.0, 87.5]


def test_points_inside_foreground_regions_are_selected() -> None:
    labels = np.zeros((100, 200), np.uint8)
    labels[:50, :100] = 8
    labels[50:, 100:] = 255
    points, classes = points_by_class(labels, grid_points(100, 200, 4))
    assert classes.tolist() == [8, 8, 8, 8]  # 255 and background cells give no prompt
    assert (points[:, 0] < 100).all() and (points[:, 1] < 50).all()


class KnownMasks:
    """A predictor that answers each point with the mask of the region a lookup table gives."""

    def __init__(self, masks_for: dict[tuple[int, int], tuple[np.ndarray, float]]) -> None:
        self.masks_for = masks_for
        self.asked: list[tuple[int, int]] = []

    def set_image(self, rgb: np.ndarray) -> None:
        self.shape = rgb.shape[:2]

    def predict_points(self, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        masks, scores = [], []
        for x, y in points:
            self.asked.append((int(x), int(y)))
            mask, score = self.masks_for.get((int(x), int(y)), (np.zeros(self.shape, bool), 0.0))
            masks.append(torch.as_tensor(mask))
            scores.append(score)
        return torch.stack(masks), torch.tensor(scores)


def test_point_masks_are_filtered_by_iou_and_merged_by_score() -> None:
    labels = np.zeros((40, 40), np.uint8)
    labels[0:20, 0:20] = 8  # cat region; grid 2x2 -> points at (10,10), (30,10), (10,30), (30,30)
    labels[20:40, 20:40] = 15  # person region
    good_cat = np.zeros((40, 40), bool)
    good_cat[0:18, 0:22] = True  # IoU with the cat region 0.82: kept
    person = np.zeros((40, 40), bool)
    person[16:40, 16:40] = True  # IoU 0.69: kept, overlaps the cat mask at [16:18, 16:22]
    predictor = KnownMasks({(10, 10): (good_cat, 0.6), (30, 30): (person, 0.9)})
    options = SamRefineOptions(grid=2, iou_threshold=0.5)
    predictor.set_image(np.zeros((40, 40, 3), np.uint8))
    kept = point_candidates(labels, predictor, options)
    assert sorted(predictor.asked) == [(10, 10), (30, 30)]
    assert kept.class_ids.tolist() == [8, 15]
    merged = paint_candidates(labels, kept)
    assert (merged[16:18, 16:22] == 15).all()  # overlap goes to the higher score, not the higher id
    assert (merged[0:16, 0:16] == 8).all() and (merged[18:20, 0:16] == 8).all()  # uncovered: input kept
    low = KnownMasks({(10, 10): (np.ones((40, 40), bool), 0.99)})  # IoU 0.25 with the cat region
    low.set_image(np.zeros((40, 40, 3), np.uint8))
    assert len(point_candidates(labels, low, options).scores) == 0


def test_merge_by_score_when_the_higher_id_scores_lower() -> None:
    labels = np.zeros((4, 4), np.uint8)
    whole_masks = torch.ones(2, 4, 4, dtype=torch.bool)
    merged = paint_candidates(labels, Candidates(whole_masks, torch.tensor([0.2, 0.7]), torch.tensor([15, 8])))
    assert (merged == 8).all()


def _published_sepl(predict: np.ndarray, masks: list[np.ndarray], num_classes: int = 21) -> np.ndarray:
    """SAM_WSSS ``merge/max_iou_imp2.py`` ``MaxIoU_IMP2.merge``, line for line, with the SAM mask
    files replaced by a list (membership in ``seen`` by index instead of by path)."""
    seen = []
    processed_mask = np.zeros_like(predict)
    for i in range(1, num_classes):
        pre_cls = predict == i
        if np.sum(pre_cls) == 0:
            continue
        candidates = []
        sam_mask = np.zeros_like(pre_cls)
        for index, cur_sam in enumerate(masks):
            if index not in seen:
                sam_mask = np.logical_or(sam_mask, cur_sam)
                improve_thresh = 2 * np.sum((pre_cls == cur_sam) * pre_cls) - np.sum(cur_sam)
                improve_pred_thresh = np.sum((pre_cls == cur_sam) * pre_cls) / np.sum(pre_cls)
                if improve_thresh > 0 or improve_pred_thresh >= 0.85:
                    candidates.append(cur_sam)
                    seen.append(index)
        cam_mask = np.logical_and(sam_mask == 0, pre_cls == 1)
        candidates.append(cam_mask)
        processed_mask[np.sum(candidates, axis=0) > 0] = i
    return processed_mask


def test_sepl_gives_a_mask_to_the_first_class_only_and_trusts_cam_only_where_sam_is_silent() -> None:
    labels = np.zeros((10, 20), np.uint8)
    labels[2:8, 2:8] = 3  # class 3: 36 px
    labels[2:8, 10:19] = 5  # class 5: 54 px, its last column beyond the shared mask
    shared = np.zeros((10, 20), bool)
    shared[2:10, 2:18] = True  # all of class 3, 89 % of class 5: qualifies for both, given to 3 only
    stray = np.zeros((10, 20), bool)
    stray[0:3, 12:20] = True  # 7 of its 24 px in class 5, 13 % of the region: given to nobody
    refined, kept = sepl_assign(labels, [shared, stray], SamRefineOptions(mode="auto"))
    assert kept == 1
    assert (refined[8:10, 2:18] == 3).all()  # the shared mask's pixels outside both regions: class 3 only
    assert (refined[3:8, 10:18] == 5).all()  # under no mask on offer to 5: class 5 paints over 3
    assert (refined[2, 12:18] == 3).all()  # under the unassigned mask too: 5 does not paint, 3 keeps them
    assert refined[2, 18] == 0  # class 5 pixel under a mask on offer but not given: background
    assert (refined[3:8, 18] == 5).all()  # no mask covers them: the CAM label stays
    assert (refined[2:8, 2:8] == 3).all() and (refined[0:2] == 0).all()
    np.testing.assert_array_equal(refined, _published_sepl(labels, [shared, stray]))


def test_sepl_keeps_uncovered_cam_pixels_and_lets_a_later_class_paint_over() -> None:
    labels = np.zeros((12, 12), np.uint8)
    labels[0:6, 0:6] = 2
    labels[4:10, 4:10] = 9  # overlaps class 2's first mask below
    first = np.zeros((12, 12), bool)
    first[0:6, 0:6] = True  # given to class 2
    uncovered = np.zeros((12, 12), bool)  # no mask at all over rows 6-9 cols 6-9
    refined, kept = sepl_assign(labels, [first, uncovered], SamRefineOptions(mode="auto"))
    assert kept == 1
    # class 9's pixels under class 2's mask are not covered by a mask on offer to 9: 9 paints over 2
    assert (refined[4:10, 4:10] == 9).all()
    assert (refined[0:4, 0:6] == 2).all()
    np.testing.assert_array_equal(refined, _published_sepl(labels, [first, uncovered]))


def test_sepl_equals_the_published_merge_on_random_layouts() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        labels = np.zeros((24, 32), np.uint8)
        for class_id in rng.choice(np.arange(1, 21), size=3, replace=False):
            top, left = rng.integers(0, 16), rng.integers(0, 24)
            labels[top : top + rng.integers(3, 12), left : left + rng.integers(3, 12)] = class_id
        masks = []
        for _ in range(rng.integers(1, 8)):
            mask = np.zeros(labels.shape, bool)
            top, left = rng.integers(0, 20), rng.integers(0, 28)
            mask[top : top + rng.integers(2, 14), left : left + rng.integers(2, 14)] = True
            masks.append(mask)
        refined, _ = sepl_assign(labels, masks, SamRefineOptions(mode="auto"))
        np.testing.assert_array_equal(refined, _published_sepl(labels, masks))


def test_sepl_keeps_unsure_pixels_no_given_mask_covers() -> None:
    labels = np.zeros((6, 6), np.uint8)
    labels[0:3, 0:3] = 4
    labels[4:6, :] = 255
    mask = np.zeros((6, 6), bool)
    mask[0:3, 0:3] = True
    mask[4, 0:2] = True  # 9 of 11 px inside class 4: given; it covers two unsure pixels
    refined, _ = sepl_assign(labels, [mask], SamRefineOptions(mode="auto"))
    assert (refined[4, 0:2] == 4).all() and (refined[4, 2:] == 255).all() and (refined[5] == 255).all()


@pytest.mark.parametrize("mode", ["points", "auto"])
def test_tiny_random_sam_runs_end_to_end(mode: str) -> None:
    rgb, gt = synthetic_scene(3, 120, 160)
    coarse = dilate(gt, 5)
    refiner = SamRefiner(SamPrompter(tiny_sam()), SamRefineOptions(mode=mode, grid=8))
    refined, record = refine_to_labels(refiner, rgb, from_label_map(coarse, (0, 8, 15)))
    assert refined.shape == gt.shape and refined.dtype == np.uint8
    assert set(np.unique(refined)) <= {0, 8, 15}
    assert isinstance(record["sam_masks_kept"], int)


def test_build_sam_checks_variant_and_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--sam must be one of vit_b, vit_l, vit_h"):
        build_sam("vit_x", "random")
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match=r"wrong\.pth does not load into vit_b"):
        build_sam("vit_b", str(tmp_path / "wrong.pth"))
    with pytest.raises(WeightsError, match=r"missing weights sam_vit_l_0b3195\.pth"):
        build_sam("vit_l")


def _example(tmp_path: Path, count: int = 3) -> tuple[Path, Path]:
    masks, coarse = {}, tmp_path / "coarse"
    for index in range(count):
        _, gt = synthetic_scene(index, 60, 80)
        masks[f"im{index}"] = gt
        write_mask(coarse / f"im{index}.png", dilate(gt, 4))
    return make_voc(tmp_path, masks), coarse


def _refine(voc: Path, masks: Path, out: Path, *extra: str):
    args = ["refine", "--dataset", "voc", "--root", str(voc), "--masks", str(masks), "--out", str(out)]
    return runner.invoke(app, [*args, "--refine", "crf", "--num-workers", "0", *extra])


def test_refine_command_writes_masks_and_resumes(tmp_path: Path) -> None:
    voc, coarse = _example(tmp_path)
    out = tmp_path / "refined"
    first = _refine(voc, coarse, out, "--limit", "2")
    assert first.exit_code == 0, first.output
    assert "2 images labelled" in first.output
    second = _refine(voc, coarse, out, "--num-workers", "2")
    assert "1 images labelled, 0 failed, 2 already done" in second.output
    records = read_manifest(out / "manifest.jsonl")
    assert [r["id"] for r in records] == ["im0", "im1", "im2"] and {r["input"] for r in records} == {"mask"}
    assert read_mask(out / "im2.png").shape == (60, 80)


def test_refine_prefers_saved_scores(tmp_path: Path) -> None:
    voc, coarse = _example(tmp_path, 1)
    labels = read_mask(coarse / "im0.png")
    save_scores(tmp_path / "scores" / "im0.npz", from_label_map(labels, (0, 8, 15), 0.9))
    result = _refine(voc, coarse, tmp_path / "out", "--scores", str(tmp_path / "scores"))
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "out" / "manifest.jsonl")[0]["input"] == "scores"


def test_refine_reports_bad_masks_and_images_and_goes_on(tmp_path: Path) -> None:
    voc, coarse = _example(tmp_path, 4)
    write_mask(coarse / "im1.png", np.zeros((10, 10), np.uint8))  # wrong size
    (coarse / "im2.png").unlink()  # missing mask
    (voc / "JPEGImages" / "im3.jpg").unlink()  # missing image
    result = _refine(voc, coarse, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "1 images labelled, 3 failed" in result.output
    errors = {
        r["id"]: r["error"] for r in read_manifest(tmp_path / "out" / "manifest.jsonl") if r["status"] == "failed"
    }
    assert "im1.png is 10x10 but its image is 80x60" in errors["im1"]
    assert "no input mask for im2" in errors["im2"]
    assert "im3.jpg does not exist" in errors["im3"]
    missing_folder = _refine(voc, tmp_path / "nowhere", tmp_path / "out2")
    assert missing_folder.exit_code == 1 and "mask folder" in missing_folder.output


def test_generate_with_crf_refinement(tmp_path: Path) -> None:
    from tiny_clip import write_tiny_config

    voc, _ = _example(tmp_path, 2)
    out = tmp_path / "cam-crf"
    args = ["generate", "--dataset", "voc", "--root", str(voc), "--out", str(out), "--clip-weights", "random"]
    args += ["--clip-model", str(write_tiny_config(tmp_path)), "--device", "cpu", "--num-workers", "0"]
    result = runner.invoke(app, [*args, "--refine", "crf", "--min-confidence", "0.9"])
    assert result.exit_code == 0, result.output
    assert all("crf_s" in r for r in read_manifest(out / "manifest.jsonl"))


@pytest.mark.parametrize("mode", ["points", "auto"])
def test_refine_command_with_sam(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    built: list[tuple] = []

    def fake_build_sam(variant: str, checkpoint: str, device: object) -> object:
        built.append((variant, checkpoint))
        return tiny_sam()

    monkeypatch.setattr("pseudolabel.models.sam.build_sam", fake_build_sam)
    voc, coarse = _example(tmp_path, 2)
    args = ["refine", "--dataset", "voc", "--root", str(voc), "--masks", str(coarse), "--out", str(tmp_path / "out")]
    args += ["--refine", "sam", "--sam-mode", mode, "--grid", "8", "--sam-checkpoint", "random", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    assert built == [("vit_b", "random")]  # the model is built once for the run
    records = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [r["status"] for r in records] == ["ok", "ok"] and all("sam_masks_kept" in r for r in records)
    for image_id in ("im0", "im1"):
        assert set(np.unique(read_mask(tmp_path / "out" / f"{image_id}.png"))) <= {0, 8, 15}


def _clip_es_crf_labels(rgb: np.ndarray, probmap: np.ndarray) -> np.ndarray:
    """CLIP-ES's eval_cam_with_crf, transcribed: its DenseCRF class with the values it is built
    with (iter_max 10, pos_w 3, pos_xy_std 1, bi_w 4, bi_xy_std 67, bi_rgb_std 3) and
    ``unary_from_softmax``, then argmax and ``label[confidence < 0.95] = 255``."""
    import pydensecrf.densecrf as dcrf
    import pydensecrf.utils as utils

    channels, height, width = probmap.shape
    crf = dcrf.DenseCRF2D(width, height, channels)
    crf.setUnaryEnergy(np.ascontiguousarray(utils.unary_from_softmax(probmap)))
    crf.addPairwiseGaussian(sxy=1, compat=3)
    crf.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.ascontiguousarray(rgb), compat=4)
    prob = np.array(crf.inference(10)).reshape((channels, height, width))
    label = np.argmax(prob, axis=0)
    label[np.max(prob, axis=0) < 0.95] = 255
    return label.astype(np.uint8)


def test_crf_refiner_equals_clip_es_crf_with_its_published_parameters() -> None:
    """Colour edges that the CAM blobs straddle, so the bilateral kernel's colour scale decides pixels."""
    rng = np.random.default_rng(5)
    height, width = 64, 96
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, :40] = (200, 60, 40)
    rgb[:, 40:70] = (40, 160, 90)
    rgb[:, 70:] = (60, 70, 200)
    rgb = np.clip(rgb.astype(int) + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    cams = np.stack([np.exp(-((xx - 25) ** 2 + (yy - 30) ** 2) / 700.0), np.exp(-((xx - 62) ** 2) / 300.0)])
    cams = cams.astype(np.float32)
    probmap = np.concatenate([1 - cams.max(axis=0, keepdims=True), cams])  # CLIP-ES: bg = (1 - max) ** 1
    expected = _clip_es_crf_labels(rgb, probmap)
    maps = ScoreMaps(probmap, (0, 8, 12))
    got = refine_to_labels(CrfRefiner(CrfOptions(min_confidence=0.95)), rgb, maps)[0]
    ids = np.array([0, 8, 12, 255], dtype=np.uint8)
    np.testing.assert_array_equal(got, ids[np.where(expected == 255, 3, expected)])
    assert {0, 8, 12, 255} <= set(np.unique(got).tolist())  # every outcome occurs, the edge is contested


def test_cep_keeps_a_mask_whose_iou_is_exactly_the_threshold() -> None:
    """The tool's CEP rule is IoU >= 0.5 (CEP's code is not published; the paper says "IoU 0.5")."""
    labels = np.zeros((40, 40), np.uint8)
    labels[0:20, 0:20] = 8  # 400 pixels; the 2x2 grid's point (10, 10) lies inside
    half = np.zeros((40, 40), bool)
    half[0:10, 0:20] = True  # 200 pixels, all inside: IoU exactly 0.5
    predictor = KnownMasks({(10, 10): (half, 0.7)})
    predictor.set_image(np.zeros((40, 40, 3), np.uint8))
    kept = point_candidates(labels, predictor, SamRefineOptions(grid=2, iou_threshold=0.5))
    assert kept.class_ids.tolist() == [8]


@pytest.mark.parametrize("kind", ["points", "boxes"])
def test_sam_prompts_reach_the_decoder_in_sams_resized_frame(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts are (x, y) pixels of the original image; SAM's decoder must get them scaled by
    ResizeLongestSide: x * new_w / W, y * new_h / H, new sizes int(side * L / long_side + 0.5)."""
    rgb = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    wrapper = SamPrompter(tiny_sam())
    wrapper.set_image(rgb)
    seen: dict[str, torch.Tensor] = {}
    real = wrapper.predictor.predict_torch

    def spy(point_coords, point_labels, boxes=None, **kwargs):
        seen["points"], seen["boxes"] = point_coords, boxes
        return real(point_coords, point_labels, boxes=boxes, **kwargs)

    monkeypatch.setattr(wrapper.predictor, "predict_torch", spy)
    side = wrapper.predictor.transform.target_length
    new_w, new_h = int(90 * side / 90 + 0.5), int(60 * side / 90 + 0.5)
    if kind == "points":
        masks, _ = wrapper.predict_points(np.array([[80.0, 10.0], [5.0, 50.0]]))
        expected = torch.tensor([[[80 * new_w / 90, 10 * new_h / 60]], [[5 * new_w / 90, 50 * new_h / 60]]])
        torch.testing.assert_close(seen["points"].cpu(), expected)
    else:
        masks, _ = wrapper.predict_boxes(torch.tensor([[10.0, 5.0, 70.0, 40.0]]))
        expected = torch.tensor([[10 * new_w / 90, 5 * new_h / 60, 70 * new_w / 90, 40 * new_h / 60]])
        torch.testing.assert_close(seen["boxes"].cpu(), expected)
    assert tuple(masks.shape[1:]) == (60, 90)  # masks come back at the image's size

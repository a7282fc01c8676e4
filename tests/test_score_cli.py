"""`pseudolabel score` end to end: figures match the independent implementation for every GT format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import random_label_pair
from helpers import make_voc
from PIL import Image
from reference_metrics import reference_scores
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.masks import VOC_COLORMAP, write_mask
from pseudolabel.evaluate.scoring import Pair, score_pairs

runner = CliRunner()
NUM_CLASSES = 21


def _pairs(count: int = 5, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [random_label_pair(rng, 41 + 3 * i, 60 - 2 * i, NUM_CLASSES) for i in range(count)]


def _write_gt(folder: Path, name: str, gt: np.ndarray, fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "P":
        write_mask(folder / f"{name}.png", gt)
    elif fmt == "L":
        Image.fromarray(gt).save(folder / f"{name}.png")
    else:
        Image.fromarray(VOC_COLORMAP[gt]).save(folder / f"{name}.png")


def _write_folders(tmp_path: Path, pairs: list, fmt: str = "P") -> tuple[Path, Path]:
    for index, (gt, pred) in enumerate(pairs):
        _write_gt(tmp_path / "gt", f"img{index}", gt, fmt)
        write_mask(tmp_path / "pred" / f"img{index}.png", pred)
    return tmp_path / "pred", tmp_path / "gt"


@pytest.mark.parametrize("fmt", ["P", "L", "RGB"])
def test_score_matches_reference_for_each_gt_format(tmp_path: Path, fmt: str) -> None:
    pairs = _pairs()
    pred, gt = _write_folders(tmp_path, pairs, fmt)
    out = tmp_path / "report" / "score.json"
    result = runner.invoke(app, ["score", "--pred", str(pred), "--gt", str(gt), "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    expected = reference_scores(pairs, NUM_CLASSES)
    for key in ("miou", "miou_confident", "coverage", "pixel_accuracy"):
        assert report[key] == pytest.approx(expected[key], abs=1e-6), key
    assert report["mbiou"] == pytest.approx(expected["mbiou"], abs=1e-4)
    assert len(report["iou"]) == NUM_CLASSES
    for ours, theirs in zip(report["iou"], expected["iou"], strict=True):
        assert ours is None if theirs is None else ours == pytest.approx(theirs, abs=1e-6)
    assert report["class_names"][15] == "person"
    assert report["num_images"] == 5
    assert f"mIoU {100 * expected['miou']:.2f}" in result.output


def test_csv_and_resolved_config_are_written(tmp_path: Path) -> None:
    pred, gt = _write_folders(tmp_path, _pairs(2))
    out_csv = tmp_path / "per_class.csv"
    result = runner.invoke(app, ["score", "--pred", str(pred), "--gt", str(gt), "--csv", str(out_csv)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == NUM_CLASSES and rows[8]["class"] == "cat"
    config = yaml.safe_load((tmp_path / "per_class.config.yaml").read_text())
    assert config["score"]["csv"] == str(out_csv)


def test_dataset_mode_scores_the_split(tmp_path: Path) -> None:
    pairs = _pairs(3)
    voc = make_voc(tmp_path, {f"id{i}": gt for i, (gt, _) in enumerate(pairs)})
    for index, (_, pred) in enumerate(pairs):
        write_mask(tmp_path / "pred" / f"id{index}.png", pred)
    write_mask(tmp_path / "pred" / "stray.png", pairs[0][1])
    out = tmp_path / "s.json"
    args = ["score", "--pred", str(tmp_path / "pred"), "--dataset", "voc", "--root", str(voc), "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["miou"] == pytest.approx(reference_scores(pairs, NUM_CLASSES)["miou"], abs=1e-6)
    assert report["num_extra_predictions"] == 1
    assert "1 predictions without GT were not scored" in result.output


def test_missing_predictions_fail_or_count_as_unsure(tmp_path: Path) -> None:
    pairs = _pairs(3)
    pred, gt = _write_folders(tmp_path, pairs)
    (pred / "img1.png").unlink()
    result = runner.invoke(app, ["score", "--pred", str(pred), "--gt", str(gt)])
    assert result.exit_code == 1
    assert "1 of 3 predictions are missing" in result.output and "img1" in result.output
    assert "Traceback" not in result.output
    out = tmp_path / "s.json"
    result = runner.invoke(app, ["score", "--pred", str(pred), "--gt", str(gt), "--allow-missing", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    all_unsure = np.full_like(pairs[1][0], 255)
    expected = reference_scores([pairs[0], (pairs[1][0], all_unsure), pairs[2]], NUM_CLASSES)
    assert report["coverage"] == pytest.approx(expected["coverage"], abs=1e-6)
    assert report["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    assert report["missing_predictions"] == ["img1"]


def test_size_mismatch_is_a_one_line_error(tmp_path: Path) -> None:
    pred, gt = _write_folders(tmp_path, _pairs(2))
    write_mask(pred / "img1.png", np.zeros((10, 10), np.uint8))
    result = runner.invoke(app, ["score", "--pred", str(pred), "--gt", str(gt)])
    assert result.exit_code == 1
    assert "size mismatch for img1.png" in result.output
    assert "Traceback" not in result.output


def test_out_of_range_prediction_is_refused(tmp_path: Path) -> None:
    pred, gt = _write_folders(tmp_path, _pairs(1))
    mask = np.zeros_like(_pairs(1)[0][0])
    mask[0, 0] = 30
    write_mask(pred / "img0.png", mask)
    result = runner.invoke(app, ["score", "--pred", str(pred), "--gt", str(gt)])
    assert result.exit_code == 1 and "holds values 30 beyond the 21 classes" in result.output


def test_config_file_values_are_overridden_by_flags(tmp_path: Path) -> None:
    pred, gt = _write_folders(tmp_path, _pairs(2))
    config = tmp_path / "score.yaml"
    config.write_text(yaml.safe_dump({"score": {"pred": str(pred), "gt": str(gt), "json": str(tmp_path / "a.json")}}))
    result = runner.invoke(app, ["score", "--config", str(config), "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b.json").exists() and not (tmp_path / "a.json").exists()
    resolved = yaml.safe_load((tmp_path / "b.config.yaml").read_text())
    assert resolved["score"]["json"] == str(tmp_path / "b.json")
    rerun = runner.invoke(app, ["score", "--config", str(tmp_path / "b.config.yaml")])
    assert rerun.exit_code == 0, rerun.output


def test_config_file_with_unknown_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("pred: x\nthreshold: 3\n")
    result = runner.invoke(app, ["score", "--config", str(config)])
    assert result.exit_code == 1
    assert "'threshold' is not an option of 'score'" in result.output


def test_usage_errors_exit_2_and_user_errors_exit_1(tmp_path: Path) -> None:
    assert runner.invoke(app, ["score"]).exit_code == 2  # --pred missing: Typer usage error
    result = runner.invoke(app, ["score", "--pred", str(tmp_path)])
    assert result.exit_code == 1 and "exactly one of --gt DIR or --dataset" in result.output


def test_parallel_scoring_equals_in_process(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    pairs = []
    for index in range(70):
        gt, pred = random_label_pair(rng, 20, 24, 5)
        write_mask(tmp_path / f"g{index}.png", gt)
        write_mask(tmp_path / f"p{index}.png", pred)
        pairs.append(Pair(str(index), tmp_path / f"g{index}.png", tmp_path / f"p{index}.png"))
    seen: list[int] = []
    parallel, parallel_rows = score_pairs(pairs, 5, workers=2, on_progress=seen.append)
    serial, serial_rows = score_pairs(pairs, 5, workers=1)
    assert parallel_rows == serial_rows and [r.image_id for r in serial_rows] == [p.name for p in pairs]
    np.testing.assert_array_equal(parallel.confusion, serial.confusion)
    np.testing.assert_array_equal(parallel.boundary_union, serial.boundary_union)
    assert sum(seen) == 70


def _rectangle_ring(shape: tuple[int, int], box: tuple[int, int, int, int], width: int) -> np.ndarray:
    """Boundary of a rectangle well inside the image: the rectangle minus itself shrunk by ``width``."""
    y0, x0, y1, x1 = box
    ring = np.zeros(shape, dtype=bool)
    ring[y0:y1, x0:x1] = True
    ring[y0 + width : y1 - width, x0 + width : x1 - width] = False
    return ring


def test_boundary_kernel_23_erodes_by_a_fixed_23_pixel_square(tmp_path: Path) -> None:
    """CEP's mBIoU: a 23 x 23 erosion (11 pixels each side) whatever the image size; the default
    would use round(0.02 * diagonal) = 5 pixels on this 150 x 200 image."""
    gt = np.zeros((150, 200), dtype=np.uint8)
    gt[30:120, 40:160] = 1
    pred = np.zeros_like(gt)
    pred[36:120, 40:166] = 1  # shifted 6 pixels down and right on two sides
    pred_dir, gt_dir = _write_folders(tmp_path, [(gt, pred)])
    result = runner.invoke(app, ["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", "2",
                                 "--boundary-kernel", "23", "--json", str(tmp_path / "s.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s.json").read_text())
    for width, kernel in ((11, 23), (5, None)):
        gt_ring = _rectangle_ring(gt.shape, (30, 40, 120, 160), width)
        pred_ring = _rectangle_ring(gt.shape, (36, 40, 120, 166), width)
        expected = np.count_nonzero(gt_ring & pred_ring) / np.count_nonzero(gt_ring | pred_ring)
        if kernel == 23:
            assert report["biou"][1] == pytest.approx(expected, rel=1e-9) and report["boundary_kernel"] == 23
        else:
            default = runner.invoke(app, ["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes",
                                          "2", "--json", str(tmp_path / "d.json")])  # fmt: skip
            assert default.exit_code == 0, default.output
            assert json.loads((tmp_path / "d.json").read_text())["biou"][1] == pytest.approx(expected, rel=1e-9)
    even = runner.invoke(app, ["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--boundary-kernel", "22"])
    assert even.exit_code == 1 and "--boundary-kernel must be an odd number" in even.output


def test_per_image_figures_match_the_reference_and_worst_lists_the_lowest(tmp_path: Path) -> None:
    pairs = _pairs(count=6, seed=8)
    pred, gt = _write_folders(tmp_path, pairs)
    per_image, report_path = tmp_path / "out" / "images.csv", tmp_path / "out" / "score.json"
    args = ["score", "--pred", str(pred), "--gt", str(gt), "--per-image", str(per_image), "--json", str(report_path)]
    result = runner.invoke(app, [*args, "--worst", "3"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    with per_image.open() as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    json_rows = {row["id"]: row for row in json.loads(report_path.read_text())["per_image"]}
    expected = {f"img{i}": reference_scores([pair], NUM_CLASSES) for i, pair in enumerate(pairs)}
    assert set(rows) == set(json_rows) == set(expected)
    for image_id, reference in expected.items():
        for key in ("miou", "coverage", "pixel_accuracy"):
            assert float(rows[image_id][key]) == pytest.approx(reference[key], abs=1e-6), (image_id, key)
            assert json_rows[image_id][key] == pytest.approx(reference[key], abs=1e-9), (image_id, key)
        assert float(rows[image_id]["mbiou"]) == pytest.approx(reference["mbiou"], abs=1e-4)
        for class_id, name in enumerate(json.loads(report_path.read_text())["class_names"]):
            cell, theirs = rows[image_id][f"iou_{name}"], reference["iou"][class_id]
            assert cell == "" if theirs is None else float(cell) == pytest.approx(theirs, abs=1e-6)
    worst = sorted(expected, key=lambda i: expected[i]["miou"])[:3]
    table = result.output[result.output.index("lowest mIoU") :]
    positions = [table.index(f" {image_id} ") for image_id in worst]
    assert positions == sorted(positions) and sorted(expected, key=lambda i: expected[i]["miou"])[3] not in table

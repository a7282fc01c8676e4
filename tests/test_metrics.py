"""Metrics against hand counts and an independent per-pixel implementation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_label_pair
from reference_metrics import literal_boundary, reference_scores

from pseudolabel.core.errors import MaskError
from pseudolabel.evaluate.metrics import Counts, boundary_width, count_pair, mask_boundary, summarize


def test_boundary_width_follows_two_percent_of_diagonal() -> None:
    assert boundary_width(10, 10) == 1  # 0.28 rounds to 0, floor of 1
    assert boundary_width(375, 500) == 12  # diagonal 625: 12.5 rounds half to even
    assert boundary_width(300, 400) == 10


def test_boundary_of_interior_square_is_its_ring() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[3:7, 3:7] = True  # 4x4 square: 16 pixels, 4 interior
    edge = mask_boundary(mask, 1)
    assert edge.sum() == 12
    assert not edge[4:6, 4:6].any()


def test_boundary_counts_the_image_border() -> None:
    full = np.ones((10, 10), dtype=bool)
    assert mask_boundary(full, 1).sum() == 36  # outer ring of a 10x10 image
    assert mask_boundary(full, 2).sum() == 100 - 36  # two rings: only the 6x6 centre survives


def test_boundary_of_thin_shapes_is_all_of_them() -> None:
    line = np.zeros((12, 12), dtype=bool)
    line[5, 2:10] = True
    assert mask_boundary(line, 1).sum() == 8


@pytest.mark.parametrize("shape", [(40, 30), (120, 90), (64, 200)])
def test_boundary_matches_literal_iterated_erosion(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    mask = np.zeros(shape, dtype=bool)
    for _ in range(4):
        top, left = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        mask[top : top + rng.integers(3, 40), left : left + rng.integers(3, 40)] = True
    width = boundary_width(*shape)
    np.testing.assert_array_equal(mask_boundary(mask, width), literal_boundary(mask))


def test_scores_match_independent_computation() -> None:
    rng = np.random.default_rng(7)
    num_classes = 6
    pairs = [random_label_pair(rng, 37 + i, 53 - i, num_classes) for i in range(6)]
    total = Counts(num_classes)
    for gt, pred in pairs:
        total.add(count_pair(gt, pred, num_classes))
    ours = summarize(total)
    expected = reference_scores(pairs, num_classes)
    for key in ("miou", "miou_confident", "coverage", "pixel_accuracy"):
        assert ours[key] == pytest.approx(expected[key], abs=1e-6), key
    assert ours["mbiou"] == pytest.approx(expected["mbiou"], abs=1e-4)
    for ours_value, expected_value in zip(ours["iou"], expected["iou"], strict=True):
        assert (ours_value is None) == (expected_value is None)
        if expected_value is not None:
            assert ours_value == pytest.approx(expected_value, abs=1e-6)
    assert ours["coverage"] < 1.0  # the pairs do hold unsure pixels


def test_unsure_prediction_is_a_miss_only_for_the_gt_class() -> None:
    gt = np.array([[1, 1, 2, 2]], dtype=np.uint8)
    pred = np.array([[1, 255, 2, 2]], dtype=np.uint8)
    scores = summarize(count_pair(gt, pred, 3))
    assert scores["iou"][1] == pytest.approx(0.5)
    assert scores["iou"][2] == pytest.approx(1.0)
    assert scores["iou_confident"][1] == pytest.approx(1.0)
    assert scores["coverage"] == pytest.approx(0.75)
    assert scores["iou"][0] is None  # no background in GT
    assert scores["precision"][0] is None


def test_class_predicted_only_as_unsure_scores_zero_boundary_iou() -> None:
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[5:15, 5:15] = 3
    pred = gt.copy()
    pred[gt == 3] = 255
    scores = summarize(count_pair(gt, pred, 4))
    assert scores["biou"][3] == 0.0
    assert scores["iou"][3] == 0.0
    expected = reference_scores([(gt, pred)], 4)
    assert scores["mbiou"] == pytest.approx(expected["mbiou"], abs=1e-4)


def test_gt_ignore_pixels_are_not_scored() -> None:
    gt = np.array([[255, 255, 1, 1]], dtype=np.uint8)
    pred = np.array([[2, 0, 1, 1]], dtype=np.uint8)
    scores = summarize(count_pair(gt, pred, 3))
    assert scores["miou"] == pytest.approx(1.0)
    assert scores["pred_pixels"][2] == 0


def test_out_of_range_values_name_the_file() -> None:
    gt = np.zeros((4, 4), dtype=np.uint8)
    pred = gt.copy()
    pred[0, 0] = 40
    with pytest.raises(MaskError, match=r"prediction of a\.png holds values 40"):
        count_pair(gt, pred, 21, name="a.png")


def test_size_mismatch_names_the_file() -> None:
    with pytest.raises(MaskError, match=r"size mismatch for b\.png.*5x4.*6x4"):
        count_pair(np.zeros((4, 6), np.uint8), np.zeros((4, 5), np.uint8), 21, name="b.png")

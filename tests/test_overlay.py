"""Overlay pictures: the panel layout, the colours at known pixels, and the overlay command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import make_voc
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.masks import VOC_COLORMAP, write_mask
from pseudolabel.evaluate.overlay import ALPHA, ERROR_COLOURS, GAP, IGNORED_GT, TITLE_HEIGHT, render_panel
from pseudolabel.runner.manifest import read_manifest

NAMES = ["background", "aeroplane", "bicycle", "bird"] + [f"c{i}" for i in range(4, 21)]


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = np.full((40, 60, 3), 100, np.uint8)
    gt = np.zeros((40, 60), np.uint8)
    gt[5:25, 5:30] = 1  # aeroplane
    gt[30:38, 40:58] = 3  # bird
    gt[0:2, :] = 255  # not scored
    pred = gt.copy()
    pred[0:2, :] = 0
    pred[5:25, 20:30] = 0  # missed part of the aeroplane
    pred[30:38, 40:50] = 2  # bird predicted as bicycle: wrong class
    pred[10:14, 40:50] = 1  # aeroplane on background: wrong class too
    pred[30:38, 50:58] = 255  # unsure
    return rgb, pred, gt


def test_panels_sit_side_by_side_under_titles_with_a_legend() -> None:
    rgb, pred, gt = _scene()
    picture = render_panel(rgb, pred, gt, NAMES, max_side=512)
    assert picture.dtype == np.uint8 and picture.shape[1] == 4 * 60 + 3 * GAP
    assert picture.shape[0] > TITLE_HEIGHT + 40  # a legend band below the panels
    top = TITLE_HEIGHT
    assert (picture[top : top + 40, 0:60] == 100).all()  # panel 1: the image itself
    assert (picture[top : top + 40, 60 : 60 + GAP] == 255).all()  # white gap
    without_gt = render_panel(rgb, pred, None, NAMES)
    assert without_gt.shape[1] == 2 * 60 + GAP


def test_colours_at_known_pixels() -> None:
    rgb, pred, gt = _scene()
    picture = render_panel(rgb, pred, gt, NAMES, max_side=512).astype(int)
    panel = {name: picture[TITLE_HEIGHT : TITLE_HEIGHT + 40, i * (60 + GAP) : i * (60 + GAP) + 60] for i, name in
             enumerate(("image", "pseudo", "gt", "errors"))}  # fmt: skip
    tint = np.rint((1 - ALPHA) * 100 + ALPHA * VOC_COLORMAP[1].astype(float))
    assert (panel["pseudo"][15, 10] == tint).all()  # inside the predicted aeroplane, off its contour
    assert (panel["pseudo"][15, 25] == 100).all()  # predicted background: the image
    assert (panel["gt"][15, 25] == tint).all()  # the GT aeroplane there
    assert (panel["pseudo"][5, 5] == VOC_COLORMAP[1]).all()  # contour corner in full colour
    assert (panel["errors"][15, 25] == ERROR_COLOURS["missed"]).all()
    assert (panel["errors"][34, 44] == ERROR_COLOURS["wrong class"]).all()
    assert (panel["errors"][12, 45] == ERROR_COLOURS["wrong class"]).all()
    assert (panel["errors"][34, 54] == ERROR_COLOURS["unsure (255)"]).all()
    assert (panel["errors"][0, 10] == IGNORED_GT).all()
    correct = panel["errors"][15, 10]
    assert correct[0] == correct[1] == correct[2]  # correct pixels stay grey


def test_a_large_photo_is_drawn_at_the_panel_size() -> None:
    rgb = np.zeros((3000, 4000, 3), np.uint8)
    label_map = np.zeros((3000, 4000), np.uint8)
    label_map[1000:2000, 1000:3000] = 3
    picture = render_panel(rgb, label_map, label_map, NAMES, max_side=400)
    assert picture.shape[1] == 4 * 400 + 3 * GAP and TITLE_HEIGHT + 300 < picture.shape[0] < TITLE_HEIGHT + 300 + 60


def test_overlay_command_writes_a_picture_per_image_and_resumes(tmp_path: Path) -> None:
    masks = {f"im{i}": np.full((30, 40), (1, 3)[i % 2], np.uint8) for i in range(3)}
    voc = make_voc(tmp_path, masks)
    for image_id, mask in masks.items():
        write_mask(tmp_path / "pred" / f"{image_id}.png", np.roll(mask, 3))
    args = ["overlay", "--dataset", "voc", "--root", str(voc), "--masks", str(tmp_path / "pred"), "--out"]
    result = CliRunner().invoke(app, [*args, str(tmp_path / "out"), "--num-workers", "0", "--max-side", "64"])
    assert result.exit_code == 0, result.output
    for image_id in masks:
        with Image.open(tmp_path / "out" / f"{image_id}.png") as picture:
            assert picture.mode == "RGB" and picture.width == 4 * 40 + 3 * GAP
    assert [r["gt"] for r in read_manifest(tmp_path / "out" / "manifest.jsonl")] == [True] * 3
    again = CliRunner().invoke(app, [*args, str(tmp_path / "out"), "--num-workers", "0", "--max-side", "64"])
    assert "0 images labelled, 0 failed, 3 already done" in again.output

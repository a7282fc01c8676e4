"""Stock COCO: GT rendered from polygons, compressed and uncompressed RLE and crowd regions
equals hand-made masks, scores the same as those masks, and is rendered once (cached)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.masks import read_mask, write_mask
from pseudolabel.datasets.coco import CocoDataset

runner = CliRunner()
CAT, DOG, PERSON = (17, 16), (18, 17), (1, 1)  # (COCO category id, contiguous class id)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, written out by hand: run lengths in column-major order, zeros first."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _rectangle(shape: tuple[int, int], top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def _tiny_coco(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Two 30x40 images; returns the root and the GT masks drawn by hand."""
    shape = (30, 40)
    cat = _rectangle(shape, 5, 5, 15, 21)  # as a polygon a quarter pixel inside its pixels' edges
    dog = _rectangle(shape, 10, 15, 25, 30)  # compressed RLE, listed after the cat: covers it
    crowd = _rectangle(shape, 26, 0, 30, 40)  # uncompressed RLE, iscrowd: never scored
    person = _rectangle(shape, 2, 2, 28, 12)
    polygon = [[5.25, 5.25, 20.75, 5.25, 20.75, 14.75, 5.25, 14.75]]
    rle = coco_mask.encode(np.asfortranarray(dog.astype(np.uint8)))
    annotations = [
        {"id": 1, "image_id": 1, "category_id": CAT[0], "segmentation": polygon, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": DOG[0], "iscrowd": 0,
         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}},
        {"id": 3, "image_id": 1, "category_id": PERSON[0], "segmentation": _uncompressed_rle(crowd), "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": PERSON[0], "segmentation": [[2.25, 2.25, 11.75, 2.25, 11.75, 27.75,
                                                                             2.25, 27.75]], "iscrowd": 0},
    ]  # fmt: skip
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
              {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30}]  # fmt: skip
    (root / "train2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    for image in images:
        Image.new("RGB", (40, 30), (90, 90, 90)).save(root / "train2014" / image["file_name"])
    from pseudolabel.core.prompts import load_prompts

    categories = [{"id": c.coco_id, "name": c.name} for c in load_prompts("coco").classes[1:]]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
    first = np.zeros(shape, np.uint8)
    first[cat], first[dog], first[crowd] = CAT[1], DOG[1], 255
    second = np.zeros(shape, np.uint8)
    second[person] = PERSON[1]
    return root, {"a": first, "b": second}


def test_rendered_gt_equals_the_hand_made_masks_and_is_cached(tmp_path: Path, monkeypatch) -> None:
    root, expected = _tiny_coco(tmp_path / "coco")
    dataset = CocoDataset(root, "train2014")
    assert dataset.gt_path("a") is None  # nothing rendered until GT is asked for
    dataset.prepare_gt()
    for image_id, mask in expected.items():
        np.testing.assert_array_equal(read_mask(dataset.gt_path(image_id)), mask)

    def no_second_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr("pseudolabel.datasets.coco_gt.render_semantic", no_second_render)
    CocoDataset(root, "train2014").prepare_gt()  # the cache answers


@pytest.mark.parametrize("with_cache", [False, True])
def test_score_on_stock_coco_equals_score_on_the_hand_made_masks(tmp_path: Path, with_cache: bool) -> None:
    root, expected = _tiny_coco(tmp_path / "coco")
    if with_cache:
        CocoDataset(root, "train2014").prepare_gt()
    for image_id, mask in expected.items():
        write_mask(tmp_path / "gt" / f"{image_id}.png", mask)
        prediction = np.roll(np.where(mask == 255, 0, mask), 2, axis=1).astype(np.uint8)
        write_mask(tmp_path / "pred" / f"{image_id}.png", prediction)
    scores = []
    for source in (
        ["--dataset", "coco", "--root", str(root), "--split", "train2014"],
        ["--gt", str(tmp_path / "gt"), "--prompts", "coco"],
    ):
        out = tmp_path / f"{source[0][2:]}.json"
        result = runner.invoke(app, ["score", "--pred", str(tmp_path / "pred"), *source, "--json", str(out)])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(out.read_text()))
    for key in ("miou", "mbiou", "coverage", "pixel_accuracy"):
        assert scores[0][key] == pytest.approx(scores[1][key], abs=1e-12), key


def _with_bad_annotations(root: Path) -> None:
    """Adds to the tiny COCO file: a dog annotation with a 2-point polygon, a car with a 1-point
    one, a cat whose box-shaped polygon has no area (to image a), a person drawn from one good
    and one 2-point polygon (to image b), and an image c without annotations."""
    path = root / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["annotations"] += [
        {"id": 5028, "image_id": 1, "category_id": DOG[0], "segmentation": [[30, 40, 90, 100]], "iscrowd": 0},
        {"id": 5029, "image_id": 2, "category_id": 3, "segmentation": [[30, 4]], "iscrowd": 0},
        {"id": 5030, "image_id": 1, "category_id": CAT[0], "segmentation": [[1, 1, 9, 1, 9, 1, 1, 1]], "iscrowd": 0},
        {"id": 5031, "image_id": 2, "category_id": PERSON[0], "iscrowd": 0,
         "segmentation": [[30.25, 2.25, 37.75, 2.25, 37.75, 5.75, 30.25, 5.75], [3, 3, 4, 4]]},
    ]  # fmt: skip
    data["images"].append({"id": 3, "file_name": "c.jpg", "width": 40, "height": 30})
    Image.new("RGB", (40, 30)).save(root / "train2014" / "c.jpg")
    path.write_text(json.dumps(data))


def test_degenerate_polygons_and_unannotated_images_are_skipped_and_counted(tmp_path: Path) -> None:
    root, expected = _tiny_coco(tmp_path / "coco")
    _with_bad_annotations(root)
    dataset = CocoDataset(root, "train2014")
    assert dataset.notices == [
        "instances_train2014.json: 3 annotations skipped, their polygons have fewer than 3 points or no area "
        "(no label, no GT): ids 5028, 5029, 5030",
        "instances_train2014.json: 1 image of 3 left out, without annotations (no image-level labels): c.jpg",
    ]
    assert dataset.ids() == ["a", "b"] and dataset.classes("b") == (PERSON[1],)  # no car from annotation 5029
    dataset.prepare_gt()
    expected["b"][2:6, 30:38] = PERSON[1]  # the good polygon of annotation 5031
    for image_id, mask in expected.items():
        np.testing.assert_array_equal(read_mask(dataset.gt_path(image_id)), mask)


@pytest.mark.parametrize("command", ["inspect", "score", "generate"])
def test_commands_on_a_stock_coco_file_with_bad_annotations_say_what_they_skipped(tmp_path: Path, command: str) -> None:
    from tiny_clip import write_tiny_config

    root, expected = _tiny_coco(tmp_path / "coco")
    _with_bad_annotations(root)
    for image_id, mask in expected.items():
        write_mask(tmp_path / "pred" / f"{image_id}.png", np.where(mask == 255, 0, mask).astype(np.uint8))
    args = [command, "--dataset", "coco", "--root", str(root), "--split", "train2014"]
    args += {
        "inspect": [],
        "score": ["--pred", str(tmp_path / "pred")],
        "generate": ["--out", str(tmp_path / "out"), "--clip-weights", "random", "--device", "cpu",
                     "--clip-model", str(write_tiny_config(tmp_path)), "--num-workers", "0"],
    }[command]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "note: instances_train2014.json: 3 annotations skipped" in result.output
    assert "note: instances_train2014.json: 1 image of 3 left out" in result.output
    if command == "generate":
        assert "2 images labelled, 0 failed" in result.output


def test_an_unknown_category_id_is_named_with_the_nearest_valid_ones(tmp_path: Path) -> None:
    root, _ = _tiny_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 5028, "image_id": 1, "category_id": 12, "segmentation": [], "iscrowd": 0})
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"annotation 5028 has category_id 12, which is not a category of the "
                       r"file; nearest: 11 'fire hydrant', 13 'stop sign', 10 'traffic light'$"):  # fmt: skip
        CocoDataset(root, "train2014")

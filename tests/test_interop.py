"""Exports checked by the libraries that consume them, and the review loop back in.

Ultralytics (its own dataset check, rasterisation and one training epoch, in a subprocess so its
global settings stay out of this process), pycocotools' COCOeval, label-studio-sdk's config and
prediction validators and brush decoder, and Datumaro (CVAT's importer; in its own environment,
named by ``PSEUDOLABEL_DATUMARO_PYTHON``). ``pseudolabel import`` must give every mask back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import make_voc
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.masks import read_mask, write_mask
from pseudolabel.core.prompts import load_prompts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_VOC = ROOT / "examples" / "voc" / "VOC2012"
VOC_NAMES = load_prompts("voc").class_names
CAT, SOFA, PERSON, DOG = 8, 18, 15, 12
runner = CliRunner()


def holey_masks() -> dict[str, np.ndarray]:
    """Label maps whose regions have holes: a ring around background, a sofa around a cat, a
    person around unsure pixels, a region with two holes, one holding an island of its class."""
    ring = np.zeros((48, 64), np.uint8)
    ring[6:40, 8:50] = DOG
    ring[14:30, 18:36] = 0
    nested = np.zeros((50, 60), np.uint8)
    nested[5:45, 5:55] = SOFA
    nested[15:30, 20:40] = CAT
    nested[40:44, 2:4] = PERSON
    unsure = np.zeros((40, 40), np.uint8)
    unsure[4:36, 4:36] = PERSON
    unsure[10:20, 10:30] = 255
    two_holes = np.zeros((44, 70), np.uint8)
    two_holes[3:40, 3:66] = CAT
    two_holes[8:20, 8:30] = 0
    two_holes[12:16, 14:20] = CAT  # an island of the same class inside the first hole
    two_holes[24:34, 40:60] = 0
    two_holes[30, 50] = DOG
    return {"ring": ring, "nested": nested, "unsure": unsure, "two_holes": two_holes}


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _export(root: Path, masks: Path, fmt: str, out: Path, *extra: str) -> str:
    return _invoke("export", "--dataset", "voc", "--root", str(root), "--masks", str(masks), "--format", fmt,
                   "--out", str(out), *extra)  # fmt: skip


def _import(root: Path, fmt: str, source: Path, out: Path, *extra: str) -> str:
    return _invoke("import", "--dataset", "voc", "--root", str(root), "--format", fmt, "--from", str(source),
                   "--out", str(out), *extra)  # fmt: skip


@pytest.fixture()
def holey_voc(tmp_path: Path) -> Path:
    """A VOC folder whose train split is :func:`holey_masks` (GT and predictions alike)."""
    return make_voc(tmp_path / "data", holey_masks())


def _without_unsure(label_map: np.ndarray) -> np.ndarray:
    return np.where(label_map == 255, 0, label_map)


# --- Ultralytics ---------------------------------------------------------------------------------


def _ultralytics(data_yaml: Path, out: Path, cwd: Path, *flags: str) -> dict:
    """Run ultralytics_check.py in a subprocess from ``cwd``, offline; its label maps and summary."""
    if importlib.util.find_spec("ultralytics") is None:  # not imported here: it patches PIL.Image.open on import
        pytest.skip("install the interop extra: pip install -e '.[interop]'")
    env = {**os.environ, "YOLO_CONFIG_DIR": str(out.parent / "ultralytics-settings"), "YOLO_OFFLINE": "true"}
    script = Path(__file__).with_name("ultralytics_check.py")
    completed = subprocess.run([sys.executable, str(script), str(data_yaml), str(out), *flags], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=600)  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with np.load(out) as found:
        return {key: found[key] for key in found.files}


def test_yolo_seg_rasterises_back_in_ultralytics_holes_included(holey_voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    _export(holey_voc, holey_voc / "SegmentationClass", "yolo-seg", out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = _ultralytics(out / "data.yaml", tmp_path / "read.npz", elsewhere)
    summary = json.loads(str(found.pop("summary")))
    # dog ring; sofa, cat, person; person; cat, its island in a hole (another region), dog
    assert summary["train"] == {"images": 4, "instances": 8}
    for image_id, expected in holey_masks().items():
        np.testing.assert_array_equal(found[f"train/{image_id}"], _without_unsure(expected))


def test_yolo_seg_export_of_the_example_data_trains_one_epoch_from_another_folder(tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    output = _export(EXAMPLE_VOC, EXAMPLE_VOC / "SegmentationClass", "yolo-seg", out, "--val-split", "val")
    assert "val points at the training images" not in output
    layout = yaml.safe_load((out / "data.yaml").read_text())
    assert layout["path"] == str(out.resolve()) and (layout["train"], layout["val"]) == ("images/train", "images/val")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = _ultralytics(out / "data.yaml", tmp_path / "read.npz", elsewhere, "--train")
    summary = json.loads(str(found.pop("summary")))
    ids = {split: (EXAMPLE_VOC / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split() for split in
           ("train", "val")}  # fmt: skip
    assert summary["nc"] == 20 and summary["trained"] is True
    for split in ("train", "val"):
        assert summary[split]["images"] == len(ids[split])
        for image_id in ids[split]:
            gt = read_mask(EXAMPLE_VOC / "SegmentationClass" / f"{image_id}.png")
            np.testing.assert_array_equal(found[f"{split}/{image_id}"], _without_unsure(gt))


def test_yolo_seg_without_a_val_split_says_where_val_points(tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    output = _export(EXAMPLE_VOC, EXAMPLE_VOC / "SegmentationClass", "yolo-seg", out)
    assert "val points at the training images" in " ".join(output.split())
    text = (out / "data.yaml").read_text()
    assert text.startswith("# val points at the training images")
    assert yaml.safe_load(text)["val"] == "images/train"


# --- COCO ------------------------------------------------------------------------------------------


def _coco_eval(gt_file: Path, predictions: list[dict]):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_file))
    evaluation = COCOeval(gt, gt.loadRes(predictions), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    matches = {  # which detections and GT found a match (loadRes renumbers detection ids)
        (e["image_id"], e["category_id"], tuple(e["aRng"])): (
            (e["dtMatches"] > 0).tolist(),
            (e["gtMatches"] > 0).tolist(),
        )
        for e in evaluation.evalImgs
        if e is not None
    }
    return evaluation.stats[0], matches


@pytest.mark.parametrize("fmt", ["coco-polygon", "coco-rle"])
def test_coco_regions_with_holes_decode_exactly_with_area_and_score(holey_voc: Path, tmp_path: Path, fmt: str) -> None:
    from pycocotools.coco import COCO

    from pseudolabel.export.regions import label_regions

    _export(holey_voc, holey_voc / "SegmentationClass", fmt, tmp_path / "labels.json")
    coco = COCO(str(tmp_path / "labels.json"))
    masks = holey_masks()
    for image in coco.loadImgs(coco.getImgIds()):
        regions = label_regions(masks[Path(image["file_name"]).stem])
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert len(annotations) == len(regions)
        for found, region in zip(annotations, regions, strict=True):
            decoded = coco.annToMask(found).astype(bool)
            np.testing.assert_array_equal(decoded, region.mask)
            assert found["area"] == decoded.sum() and found["score"] == 1.0


def test_coco_image_ids_are_stable_and_cocoeval_sees_only_the_dropped_image_change(
    holey_voc: Path, tmp_path: Path
) -> None:
    gt_masks = holey_voc / "SegmentationClass"
    _export(holey_voc, gt_masks, "coco-rle", tmp_path / "gt.json")
    pseudo = tmp_path / "pseudo"
    for path in gt_masks.glob("*.png"):
        if path.stem != "ring":  # the first image of the split: positions would shift every later id
            write_mask(pseudo / path.name, read_mask(path))
    output = _export(holey_voc, pseudo, "coco-rle", tmp_path / "pseudo.json")
    assert "skipped ring: no mask" in output
    gt, dropped = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("gt", "pseudo"))
    gt_ids = {image["file_name"]: image["id"] for image in gt["images"]}
    assert gt_ids == {f"{name}.jpg": number for number, name in enumerate(holey_masks(), start=1)}
    assert all(gt_ids[image["file_name"]] == image["id"] for image in dropped["images"])

    ap_full, full = _coco_eval(tmp_path / "gt.json", gt["annotations"])
    assert ap_full == pytest.approx(1.0)
    ap_dropped, partial = _coco_eval(tmp_path / "gt.json", dropped["annotations"])
    assert ap_dropped < 1.0
    changed = {key[0] for key in full if partial.get(key) != full[key]}
    assert changed == {gt_ids["ring.jpg"]}


def test_stock_coco_exports_keep_cocos_own_image_ids(tmp_path: Path) -> None:
    from pseudolabel.datasets.coco import CocoDataset

    images = tmp_path / "coco" / "val2017"
    images.mkdir(parents=True)
    mask = np.zeros((20, 30), np.uint8)
    mask[4:12, 5:20] = 1  # person
    from PIL import Image

    records = []
    for coco_id in (139, 285):
        Image.new("RGB", (30, 20)).save(images / f"{coco_id:012d}.jpg")
        records.append({"id": coco_id, "file_name": f"{coco_id:012d}.jpg", "width": 30, "height": 20})
    annotations = [{"id": n, "image_id": r["id"], "category_id": 1, "iscrowd": 0, "area": 120,
                    "bbox": [5, 4, 15, 8], "segmentation": [[5, 4, 20, 4, 20, 12, 5, 12]]}
                   for n, r in enumerate(records, start=1)]  # fmt: skip
    categories = [{"id": 1, "name": "person", "supercategory": "person"}]
    (tmp_path / "coco" / "annotations").mkdir()
    instances = {"images": records, "annotations": annotations, "categories": categories}
    (tmp_path / "coco" / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    assert CocoDataset(tmp_path / "coco", "val2017").numeric_ids() == {"000000000139": 139, "000000000285": 285}
    pred = tmp_path / "pred"
    write_mask(pred / "000000000285.png", mask)
    _invoke("export", "--dataset", "coco", "--root", str(tmp_path / "coco"), "--split", "val2017", "--masks",
            str(pred), "--format", "coco-rle", "--out", str(tmp_path / "out.json"))  # fmt: skip
    exported = json.loads((tmp_path / "out.json").read_text())
    assert [image["id"] for image in exported["images"]] == [285]
    assert [a["image_id"] for a in exported["annotations"]] == [285]


def test_region_scores_are_the_mean_of_saved_score_maps(holey_voc: Path, tmp_path: Path) -> None:
    from pseudolabel.core.scoremaps import ScoreMaps, save_scores

    rng = np.random.default_rng(3)
    scores_dir = tmp_path / "scores"
    expected = {}
    for image_id, label_map in holey_masks().items():
        classes = (0, *sorted(set(np.unique(label_map).tolist()) - {0, 255}))
        scores = rng.random((len(classes), *label_map.shape)).astype(np.float16).astype(np.float32)
        save_scores(scores_dir / f"{image_id}.npz", ScoreMaps(scores, classes))
        for class_id in classes[1:]:
            region = label_map == class_id  # "--instances none": one region per class
            expected[(image_id, class_id)] = float(scores[classes.index(class_id)][region].mean())
    _export(holey_voc, holey_voc / "SegmentationClass", "coco-rle", tmp_path / "scored.json", "--scores",
            str(scores_dir), "--instances", "none")  # fmt: skip
    exported = json.loads((tmp_path / "scored.json").read_text())
    stems = {image["id"]: Path(image["file_name"]).stem for image in exported["images"]}
    found = {(stems[a["image_id"]], a["category_id"]): a["score"] for a in exported["annotations"]}
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, abs=1e-6)


# --- Label Studio ----------------------------------------------------------------------------------


def _label_studio_export(tasks: list[dict], corrected: dict[str, list[dict]] | None = None) -> list[dict]:
    """What Label Studio's JSON export holds once a reviewer submitted each task: an annotation
    whose result is the prediction's (accepted) or ``corrected[id]``; the original tasks keep
    their predictions, and a task id as Label Studio numbers them."""
    exported = []
    for number, task in enumerate(tasks, start=1):
        result = (corrected or {}).get(task["data"]["pseudolabel_id"], task["predictions"][0]["result"])
        annotation = {"id": number, "result": result, "was_cancelled": False, "updated_at": "2026-12-02T08:00:00Z"}
        exported.append({**task, "id": number, "annotations": [annotation]})
    return exported


def test_label_studio_tasks_validate_and_decode_with_label_studio_sdk(holey_voc: Path, tmp_path: Path) -> None:
    sdk = pytest.importorskip("label_studio_sdk", reason="install the interop extra: pip install -e '.[interop]'")
    from label_studio_sdk.converter.brush import decode_rle
    from label_studio_sdk.label_interface import LabelInterface

    out = tmp_path / "ls"
    _export(holey_voc, holey_voc / "SegmentationClass", "label-studio", out, "--image-prefix", "http://host/img/")
    interface = LabelInterface((out / "labeling-config.xml").read_text())
    interface.validate()
    tasks = json.loads((out / "tasks.json").read_text())
    masks = holey_masks()
    assert [task["data"]["pseudolabel_id"] for task in tasks] == list(masks)
    for task in tasks:
        image_id = task["data"]["pseudolabel_id"]
        assert task["data"]["image"] == f"http://host/img/{image_id}.jpg"
        prediction = task["predictions"][0]
        assert interface.validate_prediction(prediction, return_errors=True) == [], sdk.__name__
        label_map = masks[image_id]
        height, width = label_map.shape
        found = {}
        for result in prediction["result"]:
            decoded = np.reshape(decode_rle(result["value"]["rle"]), (height, width, 4))[:, :, 3]
            found[result["value"]["brushlabels"][0]] = decoded
        present = [c for c in np.unique(label_map) if c != 0]
        names = {int(c): "unsure" if c == 255 else VOC_NAMES[c] for c in present}
        assert sorted(found) == sorted(names.values())
        for class_id, name in names.items():
            np.testing.assert_array_equal(found[name], (label_map == class_id).astype(np.uint8) * 255)


def test_label_studio_review_round_trip_keeps_accepted_masks_and_takes_corrections(
    holey_voc: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ls"
    _export(holey_voc, holey_voc / "SegmentationClass", "label-studio", out)
    tasks = json.loads((out / "tasks.json").read_text())
    # the reviewer redraws "unsure" as a person polygon over its 10x20 block (percent of 40x40)
    block = [[25.0, 25.0], [75.0, 25.0], [75.0, 50.0], [25.0, 50.0]]
    person = {"from_name": "polygon", "to_name": "image", "type": "polygonlabels", "original_width": 40,
              "original_height": 40, "value": {"points": block, "polygonlabels": ["person"]}}  # fmt: skip
    kept = [r for r in tasks[2]["predictions"][0]["result"] if r["value"]["brushlabels"] != ["unsure"]]
    exported = _label_studio_export(tasks, {"unsure": [*kept, person]})
    del exported[1]["annotations"]  # "nested" was never reviewed
    export_file = tmp_path / "project.json"
    export_file.write_text(json.dumps(exported))
    output = _import(holey_voc, "label-studio", export_file, tmp_path / "back")
    assert "skipped nested: not reviewed" in output and "3 label maps written" in output
    masks = holey_masks()
    for image_id in ("ring", "two_holes"):
        np.testing.assert_array_equal(read_mask(tmp_path / "back" / f"{image_id}.png"), masks[image_id])
    corrected = masks["unsure"].copy()
    corrected[corrected == 255] = PERSON
    np.testing.assert_array_equal(read_mask(tmp_path / "back" / "unsure.png"), corrected)
    assert not (tmp_path / "back" / "nested.png").exists()


# --- CVAT ------------------------------------------------------------------------------------------


def test_cvat_masks_read_back_in_datumaro_as_cvat_imports_them(holey_voc: Path, tmp_path: Path) -> None:
    python = os.environ.get("PSEUDOLABEL_DATUMARO_PYTHON")
    if not python:
        pytest.skip("set PSEUDOLABEL_DATUMARO_PYTHON to a Python with datumaro (.ci/run makes one)")
    out = tmp_path / "cvat"
    _export(holey_voc, holey_voc / "SegmentationClass", "cvat-mask", out)
    script = Path(__file__).with_name("datumaro_check.py")
    completed = subprocess.run([python, str(script), str(out), str(tmp_path / "read.npz")], capture_output=True,
                               text=True, timeout=300)  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with np.load(tmp_path / "read.npz") as found:
        names = json.loads(str(found["names"]))
        instances = json.loads(str(found["instances"]))
        maps = {key: found[key] for key in found.files if key not in ("names", "instances")}
    assert names == [*VOC_NAMES, "unsure"]
    ours = np.array([*range(21), 255], np.uint8)  # Datumaro's label index -> our class id
    regions = {"ring": 1, "nested": 3, "unsure": 1, "two_holes": 3}
    for image_id, expected in holey_masks().items():
        np.testing.assert_array_equal(ours[maps[image_id]], expected)
        assert instances[image_id] == regions[image_id] + (expected == 255).any()


# --- import: every format back to the masks --------------------------------------------------------


@pytest.mark.parametrize(
    ("export_format", "import_format", "keeps_unsure"),
    [
        ("coco-polygon", "coco", False),
        ("coco-rle", "coco", False),
        ("yolo-seg", "yolo-seg", False),
        ("cvat-mask", "cvat-mask", True),
    ],
)
def test_import_gives_the_exported_masks_back(
    holey_voc: Path, tmp_path: Path, export_format: str, import_format: str, keeps_unsure: bool
) -> None:
    exported = tmp_path / ("labels.json" if export_format.startswith("coco") else "exported")
    _export(holey_voc, holey_voc / "SegmentationClass", export_format, exported)
    output = _import(holey_voc, import_format, exported, tmp_path / "back")
    assert "4 label maps written" in output
    for image_id, expected in holey_masks().items():
        found = read_mask(tmp_path / "back" / f"{image_id}.png")
        np.testing.assert_array_equal(found, expected if keeps_unsure else _without_unsure(expected))


def test_import_reads_a_cvat_zip_and_refuses_what_it_cannot_place(holey_voc: Path, tmp_path: Path) -> None:
    import shutil

    exported = tmp_path / "cvat"
    _export(holey_voc, holey_voc / "SegmentationClass", "cvat-mask", exported)
    archive = shutil.make_archive(str(tmp_path / "task"), "zip", exported)
    assert "4 label maps written" in _import(holey_voc, "cvat-mask", Path(archive), tmp_path / "from-zip")
    # a mask of an image the split lacks, and one of the wrong size
    from PIL import Image

    Image.new("RGB", (8, 8)).save(exported / "SegmentationClass" / "stranger.png")
    Image.new("RGB", (8, 8)).save(exported / "SegmentationClass" / "ring.png")
    output = " ".join(_import(holey_voc, "cvat-mask", exported, tmp_path / "back").split())
    assert "skipped stranger: 'stranger' is not an image of the split" in output
    assert "skipped ring: annotated at 8x8, its image is 64x48" in output and "2 skipped" in output


def test_import_names_an_unknown_category_and_suggests_the_class(holey_voc: Path, tmp_path: Path) -> None:
    _export(holey_voc, holey_voc / "SegmentationClass", "coco-rle", tmp_path / "labels.json")
    data = json.loads((tmp_path / "labels.json").read_text())
    data["categories"][7]["name"] = "kat"
    (tmp_path / "labels.json").write_text(json.dumps(data))
    result = runner.invoke(app, ["import", "--dataset", "voc", "--root", str(holey_voc), "--format", "coco",
                                 "--from", str(tmp_path / "labels.json"), "--out", str(tmp_path / "back")])  # fmt: skip
    assert result.exit_code == 1
    assert "category 8: unknown class 'kat'" in result.output and "did you mean 'cat'" in result.output
    assert not list((tmp_path / "back").glob("*.png"))


def test_import_settles_overlaps_two_classes_as_unsure_and_crowds_as_unsure(holey_voc: Path, tmp_path: Path) -> None:
    def box(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    height, width = holey_masks()["ring"].shape
    annotations = [  # (category, box, crowd): cat and dog overlap; two cats overlap; a crowd of people
        (CAT, box(0, 0, 20, 20), 0), (DOG, box(10, 10, 30, 30), 0), (CAT, box(40, 0, 50, 10), 0),
        (CAT, box(45, 5, 55, 15), 0), (PERSON, box(0, 35, 10, 45), 1),
    ]  # fmt: skip
    document = {
        "images": [{"id": 7, "file_name": "ring.jpg", "width": width, "height": height}],
        "annotations": [
            {
                "id": n,
                "image_id": 7,
                "category_id": c,
                "segmentation": s,
                "iscrowd": crowd,
                "area": 1,
                "bbox": [0, 0, 1, 1],
            }
            for n, (c, s, crowd) in enumerate(annotations, start=1)
        ],
        "categories": [{"id": c, "name": VOC_NAMES[c]} for c in range(1, 21)],
    }
    (tmp_path / "corrected.json").write_text(json.dumps(document))
    _import(holey_voc, "coco", tmp_path / "corrected.json", tmp_path / "back")
    expected = np.zeros((height, width), np.uint8)
    expected[0:20, 0:20] = CAT  # pycocotools: a box [x0, x1] covers pixel centres x0 + 0.5 ... x1 - 0.5
    expected[10:30, 10:30] = DOG
    expected[10:20, 10:20] = 255
    expected[0:10, 40:50] = CAT
    expected[5:15, 45:55] = CAT
    expected[35:45, 0:10] = 255
    np.testing.assert_array_equal(read_mask(tmp_path / "back" / "ring.png"), expected)


def test_an_option_of_another_format_is_refused_by_name(tmp_path: Path) -> None:
    args = ["export", "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--masks", str(EXAMPLE_VOC / "SegmentationClass")]
    wrong = runner.invoke(app, [*args, "--format", "cvat-mask", "--out", str(tmp_path / "c"), "--val-split", "val"])
    assert wrong.exit_code == 1 and "--val-split is an option of --format yolo-seg, not of cvat-mask" in wrong.output
    both = runner.invoke(app, [*args, "--format", "yolo-seg", "--out", str(tmp_path / "y"), "--val-split", "val",
                               "--split-name", "val"])  # fmt: skip
    assert both.exit_code == 1 and "--split-name val is the folder --val-split writes to" in both.output
    named = _export(EXAMPLE_VOC, EXAMPLE_VOC / "SegmentationClass", "yolo-seg", tmp_path / "n", "--split-name", "all")
    assert "4 images" in named and (tmp_path / "n" / "labels" / "all" / "2026_000001.txt").is_file()
    assert yaml.safe_load((tmp_path / "n" / "data.yaml").read_text())["train"] == "images/all"

"""VOC, COCO and folder datasets: ids, labels, GT paths, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_coco, make_voc, voc_annotation
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import ConfigError, ImageLoadError, MaskError
from pseudolabel.core.prompts import load_prompts
from pseudolabel.datasets import build_dataset, resolve_prompts
from pseudolabel.datasets.coco import CocoDataset
from pseudolabel.datasets.folder import FolderDataset
from pseudolabel.datasets.voc import VocDataset

runner = CliRunner()


def _mask(*class_ids: int) -> np.ndarray:
    mask = np.zeros((6, 8), np.uint8)
    for position, class_id in enumerate(class_ids):
        mask[position, :] = class_id
    mask[-1, -1] = 255
    return mask


def test_voc_labels_come_from_masks_and_aug_wins(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8, 15), "b": _mask(12)})
    dataset = VocDataset(tmp_path, "train")  # the folder above VOC2012 is accepted
    assert dataset.root == voc
    assert dataset.ids() == ["a", "b"]
    assert dataset.classes("a") == (8, 15)
    (voc / "SegmentationClassAug").mkdir()
    from pseudolabel.core.masks import write_mask

    write_mask(voc / "SegmentationClassAug" / "b.png", _mask(3))
    assert dataset.classes("b") == (3,)
    sample = dataset.load("a")
    assert sample.rgb.shape == (6, 8, 3) and sample.gt_path == voc / "SegmentationClass" / "a.png"


def test_voc_labels_from_annotations_when_no_mask(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8)})
    (voc / "SegmentationClass" / "a.png").unlink()
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "a.xml").write_text(voc_annotation(["dog", "person", "dog"]))
    dataset = VocDataset(voc, "train")
    assert dataset.classes("a") == (12, 15)
    assert dataset.gt_path("a") is None
    (voc / "Annotations" / "a.xml").write_text(voc_annotation(["dragon"]))
    with pytest.raises(ConfigError, match=r"a\.xml: unknown class 'dragon'"):
        dataset.classes("a")


def test_voc_split_errors(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8)})
    with pytest.raises(ConfigError, match=r"split 'val' not found.*available: train"):
        VocDataset(voc, "val")
    with pytest.raises(ConfigError, match="is not a VOC2012 folder"):
        VocDataset(tmp_path / "nowhere", "train")
    (voc / "ImageSets" / "Segmentation" / "dup.txt").write_text("a\na\n")
    with pytest.raises(ConfigError, match="more than once: a"):
        VocDataset(voc, "dup")


def test_voc_split_accepts_deeplab_style_lines(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8)})
    (voc / "ImageSets" / "Segmentation" / "aug.txt").write_text("/JPEGImages/a.jpg /SegmentationClassAug/a.png\n")
    assert VocDataset(voc, "aug").ids() == ["a"]


def test_voc_trainaug_list_in_either_published_layout(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8), "b": _mask(3)})
    (voc / "ImageSets" / "SegmentationAug").mkdir()
    deeplab = voc / "ImageSets" / "SegmentationAug" / "train_aug.txt"  # deeplab-pytorch's pairs
    deeplab.write_text("/JPEGImages/b.jpg /SegmentationClassAug/b.png\n/JPEGImages/a.jpg /SegmentationClassAug/a.png\n")
    assert VocDataset(voc, "trainaug").ids() == ["b", "a"]
    assert VocDataset(voc, "train_aug").ids() == ["b", "a"]
    (voc / "ImageSets" / "Segmentation" / "trainaug.txt").write_text("a\n")  # CLIP-ES style plain ids win
    assert VocDataset(voc, "trainaug").ids() == ["a"]
    with pytest.raises(ConfigError, match=r"no ImageSets/Segmentation/val\.txt or ImageSets/SegmentationAug/val\.txt"):
        VocDataset(voc, "val")


def test_voc_labels_come_from_annotations_before_masks(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8, 15)})
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "a.xml").write_text(voc_annotation(["cat"]))  # the mask also holds a person
    assert VocDataset(voc, "train").classes("a") == (8,)


def test_voc_mask_with_non_class_values_is_a_sample_error(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8)})
    from pseudolabel.core.masks import write_mask

    write_mask(voc / "SegmentationClass" / "a.png", _mask(40))
    with pytest.raises(MaskError, match=r"a\.png holds values \[40\]"):
        VocDataset(voc, "train").classes("a")


def test_coco_labels_use_contiguous_ids(tmp_path: Path) -> None:
    root = make_coco(tmp_path, "val2014", {"x": [1, 90, 1], "y": [62], "empty": []})
    dataset = CocoDataset(root, "val2014")
    assert dataset.ids() == ["x", "y"]  # images without annotations carry no label
    assert dataset.classes("x") == (1, 80)  # person, toothbrush
    assert dataset.class_names[dataset.classes("y")[0]] == "chair"
    assert dataset.load("x").rgb.shape == (6, 8, 3)
    assert dataset.gt_path("x") is None


def test_coco_categories_other_than_cocos_are_the_classes_unless_coco_prompts_are_asked_for(tmp_path: Path) -> None:
    root = make_coco(tmp_path, "val2014", {"x": [1], "y": [90]})
    path = root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["categories"][0]["name"] = "human"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"category 1 'human' does not match"):
        CocoDataset(root, "val2014", load_prompts("coco"))
    own = CocoDataset(root, "val2014")
    assert own.class_names[:3] == ["background", "human", "bicycle"] and own.num_classes == 81
    assert own.classes("x") == (1,) and own.classes("y") == (80,) and own.prompts.classes[80].coco_id == 90


def test_a_coco_file_with_its_own_categories_labels_its_images(tmp_path: Path) -> None:
    root = make_coco(tmp_path, "train", {"a": [1]})
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["categories"] = [{"id": 7, "name": "widget"}, {"id": 3, "name": "gadget"}]
    data["annotations"] = [{"id": 1, "image_id": 1, "category_id": 7}, {"id": 2, "image_id": 1, "category_id": 3}]
    path.write_text(json.dumps(data))
    dataset = CocoDataset(root, "train")
    assert dataset.class_names == ["background", "gadget", "widget"] and dataset.classes("a") == (1, 2)
    data["annotations"].append({"id": 3, "image_id": 1, "category_id": 99})
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="annotation 3 has category_id 99, which is not a category of the file"):
        CocoDataset(root, "train")


def test_folder_labels_with_own_names_and_one_folder_per_class(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for relative in ("widget/1.jpg", "widget/sub/2.png", "gadget/3.jpg", "loose.jpg"):
        (images / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3)).save(images / relative)
    by_folder = FolderDataset(images, "folders")
    assert by_folder.class_names == ["background", "gadget", "widget"]
    assert {i: by_folder.classes(i) for i in by_folder.ids()} == {
        "gadget/3": (1,),
        "widget/1": (2,),
        "widget/sub/2": (2,),
    }
    labels = tmp_path / "labels.csv"
    labels.write_text("loose.jpg,Widget;gadget\nwidget/1.jpg,gadget\n")
    own = FolderDataset(images, labels)
    assert own.class_names == ["background", "gadget", "Widget"] and own.classes("loose") == (1, 2)
    labels.write_text("loose.jpg,Widget;cat\nwidget/1.jpg,gadget\n")  # a VOC name among them: VOC's list
    with pytest.raises(ConfigError, match=r"labels\.csv:1: unknown class 'Widget'.*--classes or --prompts"):
        FolderDataset(images, labels)
    declared = load_prompts("voc").with_class_names(["Widget", "cat", "gadget"], "classes.txt")
    mixed = FolderDataset(images, labels, declared)
    assert mixed.class_names == ["background", "Widget", "cat", "gadget"] and mixed.classes("loose") == (1, 2)
    assert mixed.prompts.classes[2].synonyms  # a VOC class keeps its synonyms
    labels.write_text("loose.jpg,cat;dog\n")
    assert FolderDataset(images, labels).class_names == load_prompts("voc").class_names  # all VOC names: VOC ids
    with pytest.raises(ConfigError, match="unknown class 'Widget'"):
        labels.write_text("loose.jpg,Widget\n")
        FolderDataset(images, labels, load_prompts("voc"))  # explicit prompts: names must be among them


def _folder(tmp_path: Path) -> Path:
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (5, 4)).save(images / "one.jpg")
    Image.new("RGB", (5, 4)).save(images / "sub" / "two.png")
    return images


def test_folder_dataset_reads_csv_and_json(tmp_path: Path) -> None:
    images = _folder(tmp_path)
    (tmp_path / "labels.csv").write_text("image,labels\none.jpg,cat;sofa\n# comment\nsub/two,Dining Table\n")
    dataset = FolderDataset(images, tmp_path / "labels.csv")
    assert dataset.ids() == ["one", "sub/two"]
    assert dataset.classes("one") == (8, 18)
    assert dataset.classes("sub/two") == (11,)
    (tmp_path / "labels.json").write_text(json.dumps({"one.jpg": ["dog"], "sub/two.png": "cat;dog"}))
    assert FolderDataset(images, tmp_path / "labels.json").classes("sub/two") == (8, 12)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("one.jpg,kitten\n", r"labels\.csv:1: unknown class 'kitten'.*synonym of 'cat'"),
        ("one.jpg,dog\nsub/two.png,cta;person\n", r"labels\.csv:2: unknown class 'cta'.*did you mean 'cat'"),
        ("one.jpg,cats;horse\n", r"labels\.csv:1: unknown class 'cats'.*did you mean 'cat'"),
        ("one.jpg,hourse;persn\n", r"labels\.csv:1: unknown class 'hourse'.*did you mean 'horse'"),
        ("one.jpg,person;Persons\n", r"unknown class 'Persons'.*did you mean 'person'"),
        ("one.jpg,\n", r"labels\.csv:1: one\.jpg has no labels"),
        ("one.jpg,cat\nghost.jpg,dog\nghost2.jpg,dog\n", r"2 listed images are not in .*: ghost\.jpg, ghost2\.jpg"),
        ("one.jpg,cat\none,dog\n", r"image id 'one' is listed more than once"),
    ],
)
def test_folder_dataset_errors(tmp_path: Path, content: str, message: str) -> None:
    images = _folder(tmp_path)
    (tmp_path / "labels.csv").write_text(content)
    with pytest.raises(ConfigError, match=message):
        FolderDataset(images, tmp_path / "labels.csv")


def test_folder_dataset_with_own_class_list(tmp_path: Path) -> None:
    images = _folder(tmp_path)
    (tmp_path / "classes.txt").write_text("widget\ngadget\n")
    (tmp_path / "labels.csv").write_text("one.jpg,gadget\n")
    prompts = resolve_prompts("folder", None, tmp_path / "classes.txt")
    dataset = build_dataset("folder", images, prompts=prompts, labels_file=tmp_path / "labels.csv")
    assert dataset.class_names == ["background", "widget", "gadget"]
    assert dataset.classes("one") == (2,)


def test_corrupt_image_fails_load_with_its_name(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8), "b": _mask(12)})
    (voc / "JPEGImages" / "b.jpg").write_bytes(b"garbage")
    dataset = VocDataset(voc, "train")
    assert dataset.load("a").classes == (8,)
    with pytest.raises(ImageLoadError, match=r"b\.jpg"):
        dataset.load("b")


def test_inspect_reports_bad_images_and_counts_the_rest(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": _mask(8), "b": _mask(12), "c": _mask(8, 15)})
    (voc / "JPEGImages" / "b.jpg").write_bytes(b"garbage")
    result = runner.invoke(app, ["inspect", "--dataset", "voc", "--root", str(voc), "--check-images"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 images have a GT mask" in result.output
    assert "skipped b: cannot decode image" in result.output
    assert "1 images have problems" in result.output
    cat_row = next(line for line in result.output.splitlines() if " cat " in line)
    assert cat_row.split("│")[3].strip() == "2"


def test_inspect_needs_root() -> None:
    result = runner.invoke(app, ["inspect", "--dataset", "voc"])
    assert result.exit_code == 1
    assert "error: --dataset voc needs --root DIR" in result.output
    assert "Traceback" not in result.output


def test_a_typo_among_voc_names_stops_and_derived_classes_are_shown(tmp_path: Path) -> None:
    """``cta`` among VOC names must not become class 1 and renumber person from 15 to 4."""
    images = _folder(tmp_path)
    (tmp_path / "typo.csv").write_text("one.jpg,cat\nsub/two.png,cta;person\n")
    args = ["generate", "--dataset", "folder", "--root", str(images), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--labels", str(tmp_path / "typo.csv"), "--clip-weights", "random"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "typo.csv:2: unknown class 'cta'" in result.output and "did you mean 'cat'" in result.output
    assert not (tmp_path / "out").exists()
    (tmp_path / "own.csv").write_text("one.jpg,widget\nsub/two.png,gadget;widget\n")
    result = runner.invoke(
        app, ["inspect", "--dataset", "folder", "--root", str(images), "--labels", str(tmp_path / "own.csv")]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        f"Class ids (the pixel values of masks), from the classes named in {tmp_path / 'own.csv'}: 1 gadget, 2 widget"
    )

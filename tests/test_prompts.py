"""Built-in prompt sets are complete; the loader rejects malformed ones with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.prompts import load_class_list, load_prompts

VOC_NAMES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def test_voc_set_matches_the_voc_convention() -> None:
    voc = load_prompts("voc")
    assert voc.class_names == VOC_NAMES
    assert len(voc.background_words) == 25
    assert voc.cam_template == "a clean origami {}."
    assert voc.classes[15].display == "person with clothes,people,human"
    assert all(len(c.synonyms) >= 3 for c in voc.classes[1:])
    assert voc.reverse_templates and all("{}" in t for t in voc.reverse_templates)


def test_coco_set_has_81_classes_in_category_order() -> None:
    coco = load_prompts("coco")
    assert coco.num_classes == 81
    ids = [c.coco_id for c in coco.classes[1:]]
    assert ids == sorted(ids) and ids[0] == 1 and ids[-1] == 90 and len(set(ids)) == 80
    assert all(len(c.synonyms) >= 3 for c in coco.classes[1:])
    assert "keyboard" not in coco.background_words


def test_class_lookup_ignores_case_and_separators_and_suggests() -> None:
    voc = load_prompts("voc")
    assert voc.class_id("Dining Table") == 11
    assert voc.class_id("TV_monitor") == 20
    with pytest.raises(ConfigError, match=r"'couch'.*synonym of 'sofa'"):
        voc.class_id("couch")
    with pytest.raises(ConfigError, match=r"did you mean 'horse'"):
        voc.class_id("hors")


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _valid() -> dict:
    return {
        "templates": {"cam": "a {}.", "pole": "a photo of {}.", "forward": ["a {}."], "reverse": ["no {}."]},
        "background_words": ["sky"],
        "classes": [{"name": "background"}, {"name": "widget", "synonyms": ["gadget", "gizmo", "device"]}],
    }


def test_custom_yaml_loads(tmp_path: Path) -> None:
    custom = load_prompts(_write(tmp_path, _valid()))
    assert custom.class_names == ["background", "widget"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["templates"].update(cam="no placeholder"), r"templates\.cam.*exactly one"),
        (lambda d: d["classes"].__setitem__(0, {"name": "sky"}), r"class 0 must be 'background'"),
        (lambda d: d["classes"][1].update(synonyms=["one"]), r"'widget' has 1 synonyms"),
        (lambda d: d["classes"].append({"name": "Widget", "synonyms": ["a", "b", "c"]}), r"same name"),
        (lambda d: d.pop("background_words"), r"missing key 'background_words'"),
        (lambda d: d["classes"][1].update(colour="red"), r"unknown keys \['colour'\]"),
    ],
)
def test_malformed_sets_are_refused(tmp_path: Path, change, message: str) -> None:
    data = _valid()
    change(data)
    with pytest.raises(ConfigError, match=message):
        load_prompts(_write(tmp_path, data))


def test_unknown_prompt_set_name() -> None:
    with pytest.raises(ConfigError, match=r"'vocc' is neither a built-in"):
        load_prompts("vocc")


def test_class_list_file_adds_background_and_keeps_known_synonyms(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\ncat\nwidget\n")
    custom = load_class_list(path, load_prompts("voc"))
    assert custom.class_names == ["background", "cat", "widget"]
    assert custom.classes[1].synonyms == load_prompts("voc").classes[8].synonyms
    path.write_text("background\n")
    with pytest.raises(ConfigError, match="names no class"):
        load_class_list(path, load_prompts("voc"))

"""The Python API: the README's example runs as written (tiny random CLIP standing in for the
published weights), and its results equal the command line's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import stand_in_checkpoint, torch_threads
from tiny_clip import TINY_CLIP
from typer.testing import CliRunner

import pseudolabel
from pseudolabel.cli import app
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import load_rgb
from pseudolabel.core.masks import read_mask
from pseudolabel.core.prompts import load_prompts
from pseudolabel.models import clip as clip_module
from pseudolabel.runner.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_default_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    """``default`` CLIP weights cannot be downloaded here: the published architecture is swapped
    for the tiny one with random weights, and a stand-in file sits where the checkpoint would (the
    command checks that every checkpoint is there before any work)."""
    stand_in_checkpoint("clip_vit_b16_openai")
    real = clip_module.build_clip
    monkeypatch.setattr(clip_module, "build_clip", lambda arch, weights, device: real(TINY_CLIP, "random", device))


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch, tiny_default_clip: None) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    photo = load_rgb(ROOT / "examples" / "voc" / "VOC2012" / "JPEGImages" / "2026_000001.jpg")
    assert result.label_map.dtype == np.uint8 and result.label_map.shape == photo.shape[:2]
    assert set(np.unique(result.label_map)) <= {0, 8, 255}
    assert namespace["summary"].done == 2 and len(list((tmp_path / "out" / "api").glob("*.png"))) == 2


def test_api_labels_equal_the_command_lines(tmp_path: Path, tiny_default_clip: None) -> None:
    voc = ROOT / "examples" / "voc" / "VOC2012"
    labeler = pseudolabel.create_labeler("cam", device="cpu", unsure_margin=0.05)
    pseudolabel.run(labeler, pseudolabel.open_dataset("voc", voc), tmp_path / "api", limit=1)
    args = ["generate", "--dataset", "voc", "--root", str(voc), "--out", str(tmp_path / "cli"), "--limit", "1"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    image_id = next((tmp_path / "cli").glob("*.png")).stem
    np.testing.assert_array_equal(
        read_mask(tmp_path / "api" / f"{image_id}.png"), read_mask(tmp_path / "cli" / f"{image_id}.png")
    )
    single = labeler(voc / "JPEGImages" / f"{image_id}.jpg", ["cat"])
    np.testing.assert_array_equal(single.label_map, read_mask(tmp_path / "cli" / f"{image_id}.png"))


def test_unknown_class_names_and_mismatched_datasets_are_refused(tmp_path: Path, tiny_default_clip: None) -> None:
    labeler = pseudolabel.create_labeler("cam", device="cpu")
    with pytest.raises(ConfigError, match="unknown class 'kitten'"):
        labeler(np.zeros((32, 32, 3), np.uint8), ["kitten"])
    coco_classes = pseudolabel.open_dataset("voc", ROOT / "examples" / "voc" / "VOC2012", prompts=load_prompts("coco"))
    with pytest.raises(ConfigError, match="the dataset's classes differ from the labeler's prompt set"):
        pseudolabel.run(labeler, coco_classes, tmp_path / "out")


def test_api_run_on_a_ray_engine_equals_the_local_run(
    tmp_path: Path, tiny_default_clip: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte-equal with the same torch thread count on both sides (1: the actor inherits it)."""
    pytest.importorskip("ray")
    from pseudolabel.runner.ray_engine import RayEngine

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dataset = pseudolabel.open_dataset("voc", ROOT / "examples" / "voc" / "VOC2012")
    labeler = pseudolabel.create_labeler("cam", device="cpu")
    with torch_threads(1):
        local = pseudolabel.run(labeler, dataset, tmp_path / "local", limit=2)
    on_ray = pseudolabel.run(labeler, dataset, tmp_path / "ray", limit=2, batch_size=2, engine=RayEngine(workers=1))
    assert local.done == on_ray.done == 2
    for png in (tmp_path / "local").glob("*.png"):
        assert (tmp_path / "ray" / png.name).read_bytes() == png.read_bytes()


def test_api_run_records_its_settings_and_refuses_a_resume_with_others(tmp_path: Path, tiny_default_clip: None) -> None:
    """As ``generate`` does: config.yaml and the resume settings; another labeler into the same
    folder is refused before any image, the same one resumes."""
    dataset = pseudolabel.open_dataset("voc", ROOT / "examples" / "voc" / "VOC2012")
    labeler = pseudolabel.create_labeler("cam", device="cpu", refine=["crf"])
    assert pseudolabel.run(labeler, dataset, tmp_path / "out", limit=1).done == 1
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert config["command"] == "python-api"
    written = config["python-api"]
    assert written["method"] == "cam" and written["refine"] == ["crf"] and written["unsure_margin"] == 0.05
    assert (
        written["labeler"]["components"]["cam"]["caa_threshold"] == 0.4
        and written["refiners"]["components"]["crf"]["iterations"] == 10
    )
    assert written["images"] == str((ROOT / "examples" / "voc" / "VOC2012" / "JPEGImages").resolve())
    assert json.loads((tmp_path / "out" / ".pseudolabel-settings.json").read_text())["command"] == "python-api"
    other = pseudolabel.create_labeler("cam", device="cpu", refine=["crf"], unsure_margin=0.2)
    with pytest.raises(ConfigError, match=r"--unsure-margin was 0\.05, now 0\.2"):
        pseudolabel.run(other, dataset, tmp_path / "out", limit=2)
    assert len(read_manifest(tmp_path / "out" / "manifest.jsonl")) == 1
    assert pseudolabel.run(labeler, dataset, tmp_path / "out", limit=2).already_done == 1

"""Every recipe in configs/ runs on the example data (tiny random models standing in for the
real ones), so a recipe naming an option that no longer exists fails here; the values each run
used equal the published code's settings written out below, so a default that changes later cannot
silently alter a recipe; the README lists each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import stand_in_checkpoint
from tiny_clip import TINY_CLIP, write_tiny_config
from tiny_grounding import write_tiny_grounding_config
from tiny_sam import build_tiny_sam, tiny_sam2
from tiny_sam3 import write_tiny_sam3_config
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.models import clipn
from pseudolabel.runner.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
EXAMPLE_VOC = ROOT / "examples" / "voc" / "VOC2012"
STAND_IN_KEYS = {"clip-model", "clip-weights", "detector", "detector-weights", "sam-checkpoint", "backbone",
                 "backbone-weights", "iters", "batch-size", "crop-size", "box-threshold", "sam3-model",
                 "sam3-checkpoint"}  # fmt: skip
"""Options :func:`_stand_ins` replaces; every other recipe value must reach the command unchanged."""
runner = CliRunner()

CLIP_ES = {  # linyq2117/CLIP-ES generate_cams_voc12.py (and eval_cam.py's alpha 1), as docs/methods.md reads it
    "method": "cam", "clip-model": "ViT-B-16-quickgelu", "clip-weights": "default", "synonyms": "fuse",
    "scales": "1.0", "flip": False, "caa": True, "caa-threshold": 0.4, "bg-alpha": 1.0, "bg-threshold": None,
    "exclude": False, "unsure-margin": 0.0, "refine": None, "labels": None,
}  # fmt: skip
PUBLISHED: dict[str, dict[str, dict]] = {
    "clip-es": {"generate": CLIP_ES},
    # CLIP-ES eval_cam_with_crf.py: DenseCRF 10 iterations, confidence below 0.95 -> 255
    "clip-es-crf": {"generate": {**CLIP_ES, "refine": "crf", "crf-iterations": 10, "min-confidence": 0.95}},
    # POLE: the class name and its first 3 synonyms, applied to CLIP-ES
    "pole": {"generate": {**CLIP_ES, "synonyms": "pole", "pole-candidates": 4}},
    # ELSE-Net's epsilon 0.2 (strict) with CLIPN's "no" tower, on CLIP-ES regions
    "else-clipn": {
        "generate": {**CLIP_ES, "exclude": True, "exclusion-weights": "clipn_vit_b16", "exclusion-threshold": 0.2}
    },
    # zhaozhengChen/SAM_WSSS sam_text_input_voc.py: one Grounding DINO Swin-T call per class with the
    # renamed prompts, box 0.3, text 0.25, every kept box (no NMS, no cap) prompts SAM ViT-H
    "grounded-sam": {
        "generate": {
            "method": "grounded-sam",
            "detector": "swint",
            "detector-weights": "default",
            "captions": "per-class",
            "synonyms": "detector",
            "box-threshold": 0.3,
            "text-threshold": 0.25,
            "nms-threshold": 1.0,
            "max-detections": 0,
            "sam": "vit_h",
            "sam-checkpoint": "default",
            "exclude": False,
            "unsure-margin": 0.0,
            "refine": None,
            "labels": None,
        }
    },
    # IDEA-Research/Grounded-SAM-2 grounded_sam2_local_demo.py: Grounding DINO Swin-T OGC on one
    # caption of the names as typed, box 0.35, text 0.25, every kept box prompts SAM 2.1 Hiera-L
    "grounded-sam2": {
        "generate": {
            "method": "grounded-sam",
            "detector": "swint",
            "detector-weights": "default",
            "captions": "joint",
            "synonyms": "none",
            "box-threshold": 0.35,
            "text-threshold": 0.25,
            "nms-threshold": 1.0,
            "max-detections": 0,
            "sam": "sam2.1_hiera_l",
            "sam-checkpoint": "default",
            "exclude": False,
            "unsure-margin": 0.0,
            "refine": None,
            "labels": None,
        }
    },
    # facebookresearch/sam3 Sam3Processor: confidence_threshold 0.5 on query x presence, mask sigmoid > 0.5
    "sam3": {
        "generate": {
            "method": "sam3",
            "sam3-model": "sam3",
            "sam3-checkpoint": "default",
            "synonyms": "none",
            "concept-threshold": 0.5,
            "mask-threshold": 0.5,
            "unsure-margin": 0.0,
        }
    },
    # CEP: 16 x 16 grid points inside each class region prompt SAM ViT-B, masks with IoU >= 0.5 kept
    "cep": {
        "refine": {
            "refine": "sam",
            "sam": "vit_b",
            "sam-checkpoint": "default",
            "sam-mode": "points",
            "grid": 16,
            "iou-threshold": 0.5,
        }
    },
    # CEP's rule with SAM 2.1 Hiera-L's point prompts
    "cep-sam2": {
        "refine": {
            "refine": "sam",
            "sam": "sam2.1_hiera_l",
            "sam-checkpoint": "default",
            "sam-mode": "points",
            "grid": 16,
            "iou-threshold": 0.5,
        }
    },
    # SAM_WSSS merge/max_iou_imp2.py on SAM ViT-H's automatic masks
    "sepl": {"refine": {"refine": "sam", "sam": "vit_h", "sam-checkpoint": "default", "sam-mode": "auto"}},
    # the same rule on SAM 2.1 Hiera-L's automatic masks (SAM 2's generator at its defaults)
    "sepl-sam2": {
        "refine": {"refine": "sam", "sam": "sam2.1_hiera_l", "sam-checkpoint": "default", "sam-mode": "auto"}
    },
    # kazuto1011/deeplab-pytorch configs/voc12.yaml
    "deeplabv2": {
        "train-seg": {
            "backbone": "resnet101-caffe",
            "backbone-weights": "coco",
            "freeze-bn": True,
            "iters": 20000,
            "batch-size": 10,
            "accumulate": 2,
            "crop-size": 321,
            "lr": 2.5e-4,
            "lr-step": 10,
            "weight-decay": 5.0e-4,
            "msc": True,
            "train-scales": "0.5,0.75,1.0,1.25,1.5",
            "loss": "ce",
        },
        "predict": {"scales": "1.0,0.5,0.75", "flip": False},
    },
}
"""Each recipe's published settings per command. A run must use exactly these values; for the
options a test replaces by tiny stand-ins, the recipe file itself must hold them."""


def _stand_ins(command: str, recipe: dict, tmp_path: Path) -> list[str]:
    """Flags that replace the recipe's real models by tiny random ones (flags override the config)."""
    if command == "generate":
        flags = ["--clip-model", str(write_tiny_config(tmp_path)), "--clip-weights", "random"]
        if recipe.get("method") == "grounded-sam":
            flags += ["--detector", str(write_tiny_grounding_config(tmp_path)), "--detector-weights", "random"]
            flags += ["--sam-checkpoint", "random", "--box-threshold", "0.45"]
        if recipe.get("method") == "sam3":
            flags += ["--sam3-model", str(write_tiny_sam3_config(tmp_path)), "--sam3-checkpoint", "random"]
        return flags
    if command == "refine":
        return ["--sam-checkpoint", "random", "--masks", str(ROOT / "examples" / "voc" / "coarse_masks")]
    if command == "train-seg":
        return ["--backbone", "resnet18", "--backbone-weights", "random", "--iters", "1", "--batch-size", "2",
                "--crop-size", "48", "--num-workers", "0"]  # fmt: skip
    return []


@pytest.mark.parametrize("path", RECIPES, ids=[path.stem for path in RECIPES])
def test_recipe_runs_on_the_example_data(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
    if "sam2" in path.stem:
        pytest.importorskip("sam2", reason="Meta's sam2 package is an optional extra")
        sam2_model = tiny_sam2()
        monkeypatch.setattr("pseudolabel.models.sam2_image.build_sam2_model", lambda *args: sam2_model)
    real_load_clipn = clipn.load_clipn
    monkeypatch.setattr(clipn, "load_clipn", lambda weights, device: real_load_clipn("random", device, TINY_CLIP))
    stand_in_checkpoint("clipn_vit_b16")
    sections = yaml.safe_load(path.read_text())
    assert sections, f"{path.name} is empty"
    dataset = ["--dataset", "voc", "--root", str(EXAMPLE_VOC), "--device", "cpu"]
    checkpoint = None
    for command, recipe in sections.items():
        out = tmp_path / command
        args = [command, "--config", str(path), *dataset, "--out", str(out), *_stand_ins(command, recipe, tmp_path)]
        if command == "train-seg":
            args += ["--masks", str(ROOT / "examples" / "voc" / "coarse_masks")]
            checkpoint = out / "last.pt"
        elif command == "predict":
            args += ["--checkpoint", str(checkpoint), "--num-workers", "0", "--limit", "1"]
        else:
            args += ["--num-workers", "0", "--limit", "2"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{path.name} {command}: {result.output}"
        if command != "train-seg":
            assert [r["status"] for r in read_manifest(out / "manifest.jsonl")] == ["ok"] * (
                1 if command == "predict" else 2
            )
        written = yaml.safe_load((out / "config.yaml").read_text())[command]
        for key, value in recipe.items():  # the recipe's own values reached the command
            if key not in STAND_IN_KEYS:
                assert str(written[key]).lower() == str(value).lower(), (path.name, key)
        for key, value in PUBLISHED[path.stem][command].items():  # and they are the published ones
            used = recipe.get(key) if key in STAND_IN_KEYS else written[key]
            assert used == value, f"{path.name} {command}: --{key} is {used!r}, published {value!r}"


def test_every_recipe_has_its_published_settings_written_out() -> None:
    assert sorted(PUBLISHED) == sorted(path.stem for path in RECIPES)
    for path in RECIPES:
        assert sorted(yaml.safe_load(path.read_text())) == sorted(PUBLISHED[path.stem]), path.name


def test_readme_lists_every_recipe_with_its_command() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| Recipe |") :]
    for path in RECIPES:
        assert re.search(rf"\| `configs/{re.escape(path.name)}` \|", table), f"README recipe table lacks {path.name}"

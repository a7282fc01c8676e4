"""Every recipe in configs/ runs on the example data (tiny random models standing in for the
real ones), so a recipe naming an option that no longer exists fails here; the README lists each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from tiny_clip import TINY_CLIP, write_tiny_config
from tiny_grounding import write_tiny_grounding_config
from tiny_sam import tiny_sam
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.manifest import read_manifest
from pseudolabel.models import clipn

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
EXAMPLE_VOC = ROOT / "examples" / "voc" / "VOC2012"
STAND_IN_KEYS = {"clip-model", "clip-weights", "detector", "detector-weights", "sam-checkpoint", "backbone",
                 "backbone-weights", "iters", "batch-size", "crop-size", "box-threshold"}  # fmt: skip
"""Options :func:`_stand_ins` replaces; every other recipe value must reach the command unchanged."""
runner = CliRunner()


def _stand_ins(command: str, recipe: dict, tmp_path: Path) -> list[str]:
    """Flags that replace the recipe's real models by tiny random ones (flags override the config)."""
    if command == "generate":
        flags = ["--clip-model", str(write_tiny_config(tmp_path)), "--clip-weights", "random"]
        if recipe.get("method") == "grounded-sam":
            flags += ["--detector", str(write_tiny_grounding_config(tmp_path)), "--detector-weights", "random"]
            flags += ["--sam-checkpoint", "random", "--box-threshold", "0.45"]
        return flags
    if command == "refine":
        return ["--sam-checkpoint", "random", "--masks", str(ROOT / "examples" / "voc" / "coarse_masks")]
    if command == "train-seg":
        return ["--backbone", "resnet18", "--backbone-weights", "random", "--iters", "1", "--batch-size", "2",
                "--crop-size", "48", "--num-workers", "0"]  # fmt: skip
    return []


@pytest.mark.parametrize("path", RECIPES, ids=[path.stem for path in RECIPES])
def test_recipe_runs_on_the_example_data(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", lambda variant, checkpoint, device: tiny_sam())
    real_load_clipn = clipn.load_clipn
    monkeypatch.setattr(clipn, "load_clipn", lambda weights, device: real_load_clipn("random", device, TINY_CLIP))
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


def test_readme_lists_every_recipe_with_its_command() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| Recipe |") :]
    for path in RECIPES:
        assert re.search(rf"\| `configs/{re.escape(path.name)}` \|", table), f"README recipe table lacks {path.name}"

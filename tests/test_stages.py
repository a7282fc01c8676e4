"""Stages over one type: ScoreMaps conversions, refiner chains in either order, the registries,
the shared SAM, and the deprecated and short forms of the refine flags."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import make_voc
from test_refine import dilate, synthetic_scene
from tiny_clip import write_tiny_config
from tiny_grounding import write_tiny_grounding_config
from tiny_sam import build_tiny_sam, tiny_sam
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.masks import read_mask, write_mask
from pseudolabel.core.scoremaps import ScoreMaps, best_two, decode, from_label_map, mark_unsure, relabel
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets import build_dataset
from pseudolabel.models.sam import SamPrompter
from pseudolabel.refiners.crf import CrfRefiner
from pseudolabel.refiners.options import CrfOptions, SamRefineOptions
from pseudolabel.refiners.sam import SamRefiner
from pseudolabel.runner.manifest import read_manifest

runner = CliRunner()


def test_from_label_map_decodes_back_to_the_label_map() -> None:
    label_map = np.array([[0, 8, 255], [15, 8, 0]], np.uint8)
    maps = from_label_map(label_map, (0, 8, 15), 0.7)
    np.testing.assert_array_equal(decode(maps), label_map)
    np.testing.assert_allclose(maps.scores[:, 0, 2], 1 / 3)  # unknown: uniform, and unsure
    np.testing.assert_allclose(maps.scores[:, 0, 1], [0.15, 0.7, 0.15])


def test_relabel_keeps_agreeing_and_unsure_pixels_scores() -> None:
    scores = np.array([[[0.6, 0.1, 0.2]], [[0.3, 0.8, 0.3]], [[0.1, 0.1, 0.5]]], np.float32)  # [3, 1, 3]
    maps = ScoreMaps(scores, (0, 8, 15))
    assert decode(maps).tolist() == [[0, 8, 15]]
    out = relabel(maps, np.array([[0, 15, 255]], np.uint8), 0.9)
    np.testing.assert_array_equal(out.scores[:, 0, 0], scores[:, 0, 0])  # same label: same scores
    np.testing.assert_allclose(out.scores[:, 0, 1], [0.05, 0.05, 0.9])  # repainted: hard scores
    np.testing.assert_array_equal(out.scores[:, 0, 2], scores[:, 0, 2])  # 255: scores kept...
    assert decode(out).tolist() == [[0, 15, 255]]  # ...and the pixel is unsure


def test_unsure_margin_marks_close_pixels() -> None:
    scores = np.array([[[0.5, 0.5]], [[0.52, 0.9]]], np.float32)
    assert decode(mark_unsure(ScoreMaps(scores, (0, 3)), 0.05)).tolist() == [[255, 3]]


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_best_two_equals_sorting_each_pixel_with_ties(channels: int) -> None:
    scores = np.random.default_rng(channels).random((channels, 7, 9)).astype(np.float32)
    scores[:, 0] = 0.25  # every channel tied
    scores[-2:, 1] = 0.99  # the two best tied
    best, second = best_two(scores)
    ordered = np.sort(scores, axis=0)
    np.testing.assert_array_equal(best, ordered[-1])
    np.testing.assert_array_equal(second, ordered[-2])
    assert np.all(best[0] == second[0]) and np.all(best[1] == second[1])


@pytest.mark.parametrize("order", [("crf", "sam"), ("sam", "crf")])
def test_refine_chain_equals_the_refiners_applied_in_that_order(tmp_path: Path, monkeypatch, order) -> None:
    """``refine --refine a,b`` writes decode(b(a(scores of the mask))), computed here directly."""
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
    _, gt = synthetic_scene(2, 60, 80)
    voc = make_voc(tmp_path, {"im0": gt})
    coarse = tmp_path / "coarse"
    write_mask(coarse / "im0.png", dilate(gt, 4))
    out = tmp_path / "out"
    args = ["refine", "--dataset", "voc", "--root", str(voc), "--masks", str(coarse), "--out", str(out)]
    args += ["--refine", ",".join(order), "--grid", "8", "--iou-threshold", "0.1", "--min-confidence", "0.6"]
    result = runner.invoke(app, [*args, "--sam-checkpoint", "random", "--device", "cpu", "--num-workers", "0"])
    assert result.exit_code == 0, result.output

    sample = build_dataset("voc", voc, "train").load("im0")
    stages = {
        "crf": CrfRefiner(CrfOptions(min_confidence=0.6)),
        "sam": SamRefiner(SamPrompter(tiny_sam()), SamRefineOptions(grid=8, iou_threshold=0.1)),
    }
    maps, record = from_label_map(dilate(gt, 4), (0, 8, 15)), StageRecord()
    for name in order:
        maps = stages[name](sample.rgb, maps, record)
    np.testing.assert_array_equal(read_mask(out / "im0.png"), decode(maps))
    manifest = read_manifest(out / "manifest.jsonl")[0]
    assert manifest["sam_masks_kept"] == record["sam_masks_kept"] and "crf_s" in manifest


def _example_voc() -> Path:
    return Path(__file__).resolve().parents[1] / "examples" / "voc" / "VOC2012"


def _generate(tmp_path: Path, *extra: str):
    args = [
        "generate",
        "--dataset",
        "voc",
        "--root",
        str(_example_voc()),
        "--out",
        str(tmp_path / "out"),
        "--limit",
        "2",
    ]
    args += ["--clip-model", str(write_tiny_config(tmp_path)), "--clip-weights", "random", "--device", "cpu"]
    return runner.invoke(app, [*args, "--num-workers", "0", "--sam-checkpoint", "random", *extra])


@pytest.mark.parametrize("chain", ["crf,sam", "sam,crf"])
def test_generate_chains_refiners_in_either_order(tmp_path: Path, monkeypatch, chain: str) -> None:
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
    result = _generate(tmp_path, "--refine", chain, "--grid", "8", "--iou-threshold", "0.1")
    assert result.exit_code == 0, result.output
    records = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert all(r["status"] == "ok" and "crf_s" in r and "sam_masks_kept" in r for r in records)


def test_an_unknown_refiner_is_refused_with_the_registered_ones(tmp_path: Path) -> None:
    """(A new refiner registers through an entry point: see test_plugins.py.)"""
    unknown = _generate(tmp_path, "--refine", "crf,blur")
    assert unknown.exit_code == 1 and "unknown refiner 'blur'; choose from crf, sam" in unknown.output


def test_grounded_sam_and_sam_refinement_share_one_sam(tmp_path: Path, monkeypatch) -> None:
    built: list[str] = []

    def build(variant, checkpoint, device):
        built.append(variant)
        return tiny_sam()

    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build)
    detector = ["--detector", str(write_tiny_grounding_config(tmp_path)), "--detector-weights", "random"]
    result = _generate(tmp_path, "--method", "grounded-sam", *detector, "--box-threshold", "0.45", "--refine", "sam")
    assert result.exit_code == 0, result.output
    assert built == ["vit_b"]


def test_refine_short_form_and_deprecated_method(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
    base = ["refine", "--dataset", "voc", "--root", str(_example_voc()), "--limit", "1", "--device", "cpu"]
    base += ["--masks", str(_example_voc().parent / "coarse_masks"), "--num-workers", "0", "--sam-checkpoint", "random"]
    short = runner.invoke(app, [*base, "--sam", "vit_b", "--out", str(tmp_path / "short")])
    assert short.exit_code == 0, short.output
    assert "sam_masks_kept" in read_manifest(tmp_path / "short" / "manifest.jsonl")[0]
    old = runner.invoke(app, [*base, "--method", "crf", "--out", str(tmp_path / "old")])
    assert old.exit_code == 0 and "refine --method is deprecated; use --refine" in old.output
    assert "crf_s" in read_manifest(tmp_path / "old" / "manifest.jsonl")[0]
    none = runner.invoke(app, [*base, "--out", str(tmp_path / "none")])
    assert none.exit_code == 1 and "name the refiners" in none.output


HELP_COMMANDS = ["", "generate", "refine", "score", "inspect", "train-seg", "predict", "overlay", "report", "export",
                 "models", "models list", "models download", "models verify"]  # fmt: skip


def _help(command: str, columns: int) -> str:
    result = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": str(columns), "TERM": "xterm"})
    assert result.exit_code == 0, result.output
    return result.output


def _words(text: str) -> list[str]:
    """The words of a help text, a word broken after its hyphen at a line end joined again."""
    return re.sub(r"-\n\s+", "-", text).split()


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_reads_whole_at_80_and_120_columns(command: str, columns: int) -> None:
    """Every line fits, nothing is cut or split inside a word (the same words as on a wide
    terminal), descriptions get room, and flags show no type where they take no value."""
    text = _help(command, columns)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= columns, [line for line in lines if len(line) > columns]
    body = "\n".join(line for line in lines if not line.startswith("Usage:"))  # [ARGS]... means more may follow
    assert "…" not in body and "..." not in body
    assert _words(text) == _words(_help(command, 1000))
    assert "<bool>" not in text
    described = [line for line in lines if line.startswith("  --") and "  " in line.strip()]
    for line in described:  # a description beside its flag starts by column 35 at the latest
        assert len(line) - len(line.strip().split("  ", 1)[1].lstrip()) <= 35, line


def test_the_method_choice_sits_in_its_own_panel_and_bad_choices_read_plainly() -> None:
    text = _help("generate", 80)
    assert text.index("Method:\n  --method <cam|grounded-sam|sam3>") < text.index("CAM:\n")
    result = runner.invoke(app, ["generate", "--dataset", "pascal", "--out", "x"], env={"COLUMNS": "80"})
    assert result.exit_code == 2
    assert "Invalid value for '--dataset': 'pascal' is not one of 'coco', 'folder', 'voc'." in result.output
    assert "Value error" not in result.output


def test_the_command_line_starts_without_importing_torch() -> None:
    """``pseudolabel --help`` reads option defaults from torch-free modules (0.3 s instead of 5 s)."""
    import subprocess
    import sys

    code = "import sys, pseudolabel.cli; print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"

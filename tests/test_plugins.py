"""A plugin package installed beside pseudolabel (tests/plugins: a module and its dist-info with
entry points, put on the path) adds a labeler and a refiner with one option each, with no file
of pseudolabel/ edited: they appear in --method / --refine and --help, their options are flags,
config-file keys and resume settings, and the Python API builds them by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from pseudolabel.core.masks import read_mask

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_VOC = ROOT / "examples" / "voc" / "VOC2012"
PLUGINS = Path(__file__).with_name("plugins")


def _pseudolabel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m pseudolabel ARGS`` with the plugin on the path (a fresh process: the registries
    are read once per process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pseudolabel", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _generate(out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["generate", "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--out", str(out), "--device", "cpu"]
    return _pseudolabel(*args, "--limit", "2", "--method", "stripes", "--refine", "frame", *extra, cwd=out.parent)


def test_a_plugin_labeler_and_refiner_run_with_their_options_and_guard_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _generate(out, "--stripes", "3", "--frame-width", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    for record in (json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()):
        assert record["status"] == "ok" and record["stripes"] == 3 and record["frame_width"] == 3
        label_map = read_mask(out / f"{record['id']}.png")
        height, width = label_map.shape
        frame = np.zeros((height, width), bool)
        frame[:3], frame[-3:], frame[:, :3], frame[:, -3:] = True, True, True, True
        assert (label_map[frame] == 255).all() and not (label_map[~frame] == 255).any()
        middle_row = label_map[height // 2, 3:-3]
        assert len(np.unique(middle_row)) >= 1 and (middle_row != 0).all()  # stripes are classes, never bg
    config = yaml.safe_load((out / "config.yaml").read_text())["generate"]
    assert (config["method"], config["refine"], config["stripes"], config["frame-width"]) == ("stripes", "frame", 3, 3)

    refused = _generate(out, "--stripes", "3", "--frame-width", "2")
    assert refused.returncode == 1
    assert "--frame-width was 3, now 2" in refused.stderr + refused.stdout

    from_config = _pseudolabel("generate", "--config", str(out / "config.yaml"), "--out", str(tmp_path / "again"),
                               cwd=tmp_path)  # fmt: skip
    assert from_config.returncode == 0, from_config.stdout + from_config.stderr
    for path in out.glob("*.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / "again" / path.name), read_mask(path))


def test_a_plugin_shows_in_help_and_the_python_api(tmp_path: Path) -> None:
    shown = _pseudolabel("generate", "--help", cwd=tmp_path)
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "--method <cam|grounded-sam|sam3|stripes>" in text and "stripes (labeler):" in text
    assert "frame (refiner): --frame-width <int> Pixels along each edge marked unsure. [default: 1]" in text
    script = (
        "import numpy as np, pseudolabel\n"
        "from pseudolabel.settings import LabelerSettings, RefinerSettings\n"
        "from toy_plugin import FrameOptions, StripesOptions\n"
        "labeler = pseudolabel.create_labeler('stripes', refine=['frame'], device='cpu',\n"
        "    settings=LabelerSettings(components={'stripes': StripesOptions(4)}),\n"
        "    refiner_settings=RefinerSettings(components={'frame': FrameOptions(2)}))\n"
        "result = labeler(np.zeros((20, 40, 3), np.uint8), ['cat', 'dog'])\n"
        "print(result.record['stripes'], result.record['frame_width'], int((result.label_map == 255).sum()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    api = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert api.returncode == 0, api.stderr
    assert api.stdout.split() == ["4", "2", str(20 * 40 - 16 * 36)]


def test_a_plugin_flag_that_is_taken_is_refused_by_name(tmp_path: Path) -> None:
    plugin = tmp_path / "clash"
    (plugin / "clash_plugin-0.1.dist-info").mkdir(parents=True)
    (plugin / "clash_plugin.py").write_text(
        "from dataclasses import dataclass\n"
        "from pseudolabel.core.components import Component, option\n"
        "@dataclass(frozen=True)\n"
        "class Options:\n"
        "    grid: int = option(3, 'Takes the SAM refiner flag.')\n"
        "CLASH = Component('refiner', 'clash', 'Clashes.', 'clash_plugin:build', options=Options)\n"
    )
    (plugin / "clash_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: clash\nVersion: 0.1\n"
    )
    (plugin / "clash_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[pseudolabel.refiners]\nclash = clash_plugin:CLASH\n"
    )
    env = {**os.environ, "PYTHONPATH": str(plugin)}
    args = ["generate", "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--out", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-m", "pseudolabel", *args], env=env, capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "the refiner 'clash' declares --grid, which is taken" in " ".join((result.stdout + result.stderr).split())


def test_a_plugin_that_does_not_import_is_named_and_left_out(tmp_path: Path) -> None:
    plugin = tmp_path / "broken"
    (plugin / "broken_plugin-0.1.dist-info").mkdir(parents=True)
    (plugin / "broken_plugin.py").write_text("import a_module_that_is_not_installed\n")
    (plugin / "broken_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n"
    )
    (plugin / "broken_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[pseudolabel.refiners]\nbroken = broken_plugin:X\n"
    )
    env = {**os.environ, "PYTHONPATH": str(plugin)}
    result = subprocess.run([sys.executable, "-m", "pseudolabel", "refine", "--help"], env=env, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and "--crf-iterations" in result.stdout
    assert "the refiner plugin 'broken' (broken_plugin:X) does not load, left out" in result.stderr

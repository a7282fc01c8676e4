"""The bundled example data is a valid VOC split and the README's main command runs on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.datasets.folder import FolderDataset
from pseudolabel.datasets.voc import VocDataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VOC_ROOT = EXAMPLES / "voc" / "VOC2012"
runner = CliRunner()


def test_example_split_loads_with_labels_and_gt() -> None:
    dataset = VocDataset(VOC_ROOT, "train")
    assert len(dataset.ids()) == 4
    names = {dataset.class_names[c] for image_id in dataset.ids() for c in dataset.classes(image_id)}
    assert names == {"cat", "person", "motorbike", "horse"}
    for image_id in dataset.ids():
        sample = dataset.load(image_id)
        assert sample.gt_path is not None and sample.rgb.ndim == 3


def test_folder_labels_agree_with_voc_masks() -> None:
    voc = VocDataset(VOC_ROOT, "train")
    folder = FolderDataset(VOC_ROOT / "JPEGImages", EXAMPLES / "folder_labels.csv")
    assert folder.ids() == voc.ids()
    assert [folder.classes(i) for i in folder.ids()] == [voc.classes(i) for i in voc.ids()]


def test_readme_score_command_on_examples(tmp_path: Path) -> None:
    out = tmp_path / "score.json"
    args = ["score", "--pred", str(EXAMPLES / "voc" / "coarse_masks"), "--dataset", "voc", "--root", str(VOC_ROOT)]
    result = runner.invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    # Dilated GT: every object pixel is found (recall 1) but objects are too fat.
    for class_id in (8, 13, 14, 15):
        assert report["recall"][class_id] == pytest.approx(1.0)
        assert report["precision"][class_id] < 1.0
    assert report["mbiou"] < report["miou"]
    assert report["coverage"] == pytest.approx(1.0)


def test_module_entry_point_runs_outside_the_test_runner(tmp_path: Path) -> None:
    args = ["score", "--pred", str(EXAMPLES / "voc" / "coarse_masks"), "--gt", str(VOC_ROOT / "SegmentationClass")]
    result = subprocess.run([sys.executable, "-m", "pseudolabel", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "mIoU" in result.stdout and "motorbike" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "pseudolabel", "score", "--pred", str(tmp_path / "none"), "--gt", str(VOC_ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [f"error: mask folder {tmp_path / 'none'} does not exist"]


def test_generate_then_score_on_examples(tmp_path: Path) -> None:
    from tiny_clip import write_tiny_config

    out = tmp_path / "cam"
    args = ["generate", "--dataset", "voc", "--root", str(VOC_ROOT), "--out", str(out), "--clip-weights", "random"]
    args += ["--clip-model", str(write_tiny_config(tmp_path)), "--device", "cpu", "--num-workers", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 images labelled, 0 failed" in result.output
    scored = runner.invoke(app, ["score", "--pred", str(out), "--dataset", "voc", "--root", str(VOC_ROOT)])
    assert scored.exit_code == 0, scored.output
    assert "mIoU" in scored.output


def test_every_subpackage_and_data_file_is_declared_for_wheels() -> None:
    """setuptools lists packages explicitly (prompts/ is mapped in); a package missing there is
    missing from every non-editable install."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    repo = Path(__file__).resolve().parents[1]
    config = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(init.parent.relative_to(repo).parts) for init in (repo / "pseudolabel").rglob("__init__.py")} | {
        "pseudolabel.prompt_files"
    }
    assert set(config["packages"]) == found
    for package, patterns in config["package-data"].items():
        folder = repo / config.get("package-dir", {}).get(package, package.replace(".", "/"))
        assert all(list(folder.glob(pattern)) for pattern in patterns), package


def test_readme_try_it_without_downloads_line_runs_as_written(tmp_path: Path) -> None:
    """The Set up section's random-weights line (real ViT-B/16 size) writes what it promises."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    setup = readme[readme.index("## Set up") : readme.index("## Commands")]
    line = next(part for part in setup.split("`") if "--clip-weights random" in part)
    assert line.startswith("pseudolabel generate ")
    (tmp_path / "examples").symlink_to(EXAMPLES)
    command = [sys.executable, "-m", "pseudolabel", *line.split()[1:]]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "weights are random: the masks mean nothing" in done.stderr
    out = tmp_path / "out" / "try"
    assert sorted(path.stem for path in out.glob("*.png")) == VocDataset(VOC_ROOT, "train").ids()
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4
    assert (out / "config.yaml").is_file() and (out / "report" / "index.html").stat().st_size > 10_000

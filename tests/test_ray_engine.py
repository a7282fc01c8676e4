"""`--engine ray` on a local Ray instance: the same files and manifest records as the local engine."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import generate_tiny, make_voc, small_voc, torch_threads
from tiny_clip import tiny_clip
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.scoremaps import load_scores
from pseudolabel.datasets.voc import VocDataset
from pseudolabel.labelers.cam import CamLabeler
from pseudolabel.runner.loop import RunOptions, run_images
from pseudolabel.runner.manifest import read_manifest
from pseudolabel.runner.per_image import ScoreRefineDecode
from pseudolabel.runner.ray_engine import RayEngine

ray = pytest.importorskip("ray")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "voc"
runner = CliRunner()
TIMINGS = ("load_s", "label_s", "cam_s", "background_s")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance whose workers run torch on 1 thread (Ray keeps an OMP_NUM_THREADS they
    inherit), so that runs here under ``torch_threads(1)`` sum floats in the same order."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    voc = small_voc(tmp_path_factory.mktemp("ray"))
    (voc / "JPEGImages" / "im3.jpg").write_bytes(b"not a jpeg")
    return voc


def _records(folder: Path) -> list[dict]:
    records = read_manifest(folder / "manifest.jsonl")
    return [{key: value for key, value in r.items() if not key.endswith("_s")} for r in records]


def test_ray_engine_writes_what_the_local_engine_writes(local_ray, voc: Path, tmp_path: Path) -> None:
    with torch_threads(1):
        local = generate_tiny(voc, tmp_path / "local", "--synonyms", "pole", "--save-scores", str(tmp_path / "ls"))
    assert local.exit_code == 0, local.output
    args = ["--engine", "ray", "--ray-workers", "2", "--synonyms", "pole", "--save-scores", str(tmp_path / "rs")]
    first = generate_tiny(voc, tmp_path / "ray", *args, "--limit", "2")
    assert first.exit_code == 0, first.output
    rest = generate_tiny(voc, tmp_path / "ray", *args)
    assert rest.exit_code == 0, rest.output
    assert "2 images labelled, 1 failed, 2 already done (of 5 selected)" in rest.output
    assert "POLE: how often each name won" in rest.output
    for index in (0, 1, 2, 4):
        name = f"im{index}.png"
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    for index in (0, 1, 2, 4):
        got, want = load_scores(tmp_path / "rs" / f"im{index}.npz"), load_scores(tmp_path / "ls" / f"im{index}.npz")
        assert got.class_ids == want.class_ids
        np.testing.assert_array_equal(got.scores, want.scores)
    assert _records(tmp_path / "ray") == _records(tmp_path / "local")
    failed = [r for r in _records(tmp_path / "ray") if r["status"] == "failed"]
    assert [r["id"] for r in failed] == ["im3"] and "im3" in failed[0]["error"]


def test_ray_refine_of_the_example_data_equals_local(local_ray, tmp_path: Path) -> None:
    """The bundled VOC example and its coarse masks, refined with CRF then decoded."""
    args = ["refine", "--dataset", "voc", "--root", str(EXAMPLES / "VOC2012"), "--refine", "crf"]
    args += ["--masks", str(EXAMPLES / "coarse_masks")]
    with torch_threads(1):
        local = runner.invoke(app, [*args, "--out", str(tmp_path / "local"), "--num-workers", "0"])
    on_ray = runner.invoke(app, [*args, "--out", str(tmp_path / "ray"), "--engine", "ray", "--ray-workers", "2"])
    assert local.exit_code == 0 and on_ray.exit_code == 0, on_ray.output
    names = sorted(path.name for path in (tmp_path / "local").glob("*.png"))
    assert len(names) == 4
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert _records(tmp_path / "ray") == _records(tmp_path / "local")


def test_without_ray_the_engine_is_a_one_line_error(voc: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    result = generate_tiny(voc, tmp_path / "o", "--engine", "ray")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "pip install 'pseudolabel[ray]'" in result.output
    assert not (tmp_path / "o" / "manifest.jsonl").exists()


def test_ray_options_need_the_ray_engine(voc: Path, tmp_path: Path) -> None:
    result = generate_tiny(voc, tmp_path / "o", "--ray-workers", "2", "--gpus-per-worker", "1")
    assert result.exit_code == 1 and "--ray-workers, --gpus-per-worker only apply with --engine ray" in result.output
    result = generate_tiny(voc, tmp_path / "o", "--engine", "ray", "--ray-workers", "0")
    assert result.exit_code == 1 and "--ray-workers must be at least 1, got 0" in result.output
    old = generate_tiny(voc, tmp_path / "o", "--workers", "2")  # the old spelling still means Ray actors
    assert "--workers (Ray actors) is deprecated; use --ray-workers" in old.output
    assert old.exit_code == 1 and "--ray-workers only apply with --engine ray" in old.output
    assert not (tmp_path / "o" / "manifest.jsonl").exists()


def test_more_gpus_per_worker_than_the_cluster_has_is_refused(local_ray, voc: Path, tmp_path: Path) -> None:
    result = generate_tiny(voc, tmp_path / "o", "--engine", "ray", "--gpus-per-worker", "1")
    assert result.exit_code == 1 and "the Ray cluster has 0 GPUs" in result.output


def test_ctrl_c_stops_after_the_image_being_written_and_resume_does_the_rest(local_ray, tmp_path: Path) -> None:
    masks = {f"im{index}": np.full((30, 40), 8, np.uint8) for index in range(5)}
    dataset = VocDataset(make_voc(tmp_path, masks), "train")
    function = ScoreRefineDecode(CamLabeler(tiny_clip(), dataset.prompts), unsure_margin=0.05)
    options = RunOptions(tmp_path / "masks", num_workers=0, batch_size=2)
    engine = RayEngine(workers=2)

    def press_ctrl_c() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    summary = run_images(dataset, lambda: function, options, on_progress=press_ctrl_c, engine=engine)
    assert summary.interrupted and summary.done == 1
    assert [r["id"] for r in read_manifest(tmp_path / "masks" / "manifest.jsonl")] == ["im0"]
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == ["im0.png"]
    resumed = run_images(dataset, lambda: function, options, engine=engine)
    assert resumed.already_done == 1 and resumed.done == 4 and not resumed.interrupted

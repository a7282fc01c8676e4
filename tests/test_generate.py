"""`pseudolabel generate --method cam` end to end with a tiny random CLIP: outputs, resume, shards,
bad images, Ctrl-C, soft scores."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import generate_tiny, small_voc
from tiny_clip import tiny_clip
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.masks import read_mask
from pseudolabel.core.scoremaps import load_scores
from pseudolabel.datasets.voc import VocDataset
from pseudolabel.labelers.cam import CamLabeler
from pseudolabel.runner.loop import RunOptions, run_images, select_ids
from pseudolabel.runner.manifest import read_manifest
from pseudolabel.runner.per_image import ScoreRefineDecode

runner = CliRunner()


_dataset = small_voc
_generate = generate_tiny


def test_generate_writes_masks_manifest_and_config(tmp_path: Path) -> None:
    voc = _dataset(tmp_path)
    out = tmp_path / "masks"
    result = _generate(voc, out, "--synonyms", "pole", "--save-scores", str(tmp_path / "scores"))
    assert result.exit_code == 0, result.output
    assert "5 images labelled, 0 failed" in result.output
    assert "POLE: how often each name won" in result.output
    dataset = VocDataset(voc, "train")
    for image_id in dataset.ids():
        labels = read_mask(out / f"{image_id}.png")
        assert labels.shape == dataset.load(image_id).rgb.shape[:2]
        assert set(np.unique(labels)) <= {0, 255, *dataset.classes(image_id)}
        scores = load_scores(tmp_path / "scores" / f"{image_id}.npz")
        assert scores.class_ids == (0, *dataset.classes(image_id))
        assert scores.scores.shape == (len(scores.class_ids), *labels.shape)
    records = read_manifest(out / "manifest.jsonl")
    assert [r["id"] for r in records] == dataset.ids()
    assert all(r["status"] == "ok" and set(r["synonyms"]) == set(r["classes"]) for r in records)
    assert (out / "config.yaml").read_text().count("synonyms: pole") == 1


def test_rerun_rewrites_nothing_and_overwrite_redoes(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 3)
    out = tmp_path / "masks"
    assert _generate(voc, out).exit_code == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    again = _generate(voc, out)
    assert again.exit_code == 0 and "0 images labelled, 0 failed, 3 already done" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    assert len(read_manifest(out / "manifest.jsonl")) == 3
    redo = _generate(voc, out, "--overwrite")
    assert "3 images labelled" in redo.output
    assert len(read_manifest(out / "manifest.jsonl")) == 6


def test_shards_partition_the_split(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 5)
    out = tmp_path / "masks"
    for shard in ("0/2", "1/2"):
        assert _generate(voc, out, "--shard", shard).exit_code == 0
    first = [r["id"] for r in read_manifest(out / "manifest-shard0of2.jsonl")]
    second = [r["id"] for r in read_manifest(out / "manifest-shard1of2.jsonl")]
    assert not set(first) & set(second)
    assert sorted(first + second) == VocDataset(voc, "train").ids()
    ids = [f"x{i}" for i in range(10)]
    parts = [select_ids(ids, (i, 3), 7) for i in range(3)]
    assert sorted(i for part in parts for i in part) == ids[:7]


def test_corrupt_image_is_recorded_and_skipped(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 3)
    (voc / "JPEGImages" / "im1.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "masks"
    result = _generate(voc, out, "--num-workers", "2")
    assert result.exit_code == 0, result.output
    assert "2 images labelled, 1 failed" in result.output
    failed = [r for r in read_manifest(out / "manifest.jsonl") if r["status"] == "failed"]
    assert [r["id"] for r in failed] == ["im1"] and "im1.jpg" in failed[0]["error"]
    assert not (out / "im1.png").exists() and (out / "im2.png").exists()


def test_ctrl_c_finishes_the_current_image_and_resume_does_the_rest(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 5)
    dataset = VocDataset(voc, "train")
    labeler = ScoreRefineDecode(CamLabeler(tiny_clip(), dataset.prompts), unsure_margin=0.05)
    calls: list[str] = []

    def interrupting_labeler(sample):
        calls.append(sample.image_id)
        if sample.image_id == "im1":
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while image 2 is labelled
        return labeler(sample)

    options = RunOptions(tmp_path / "masks", num_workers=0)
    summary = run_images(dataset, lambda: interrupting_labeler, options)
    assert summary.interrupted and summary.done == 2
    records = read_manifest(tmp_path / "masks" / "manifest.jsonl")
    assert [r["id"] for r in records] == ["im0", "im1"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "masks").glob("*.png")}
    calls.clear()
    resumed = run_images(dataset, lambda: interrupting_labeler, options)
    assert calls == ["im2", "im3", "im4"] and resumed.already_done == 2 and not resumed.interrupted
    assert all((tmp_path / "masks" / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())


def test_killed_run_leftovers_do_not_break_resume(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 2)
    out = tmp_path / "masks"
    out.mkdir()
    (out / "manifest.jsonl").write_text('{"id": "im0", "status": "ok"}\n{"id": "im1", "sta')  # cut mid-line
    (out / ".im1.png.1234.tmp").write_bytes(b"half")  # a temp file of a killed write
    (out / "im0.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")  # not ours, but must not count as done
    result = _generate(voc, out)
    assert result.exit_code == 0, result.output
    assert "2 images labelled" in result.output
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["im0", "im0", "im1"]
    assert read_mask(out / "im0.png").shape == (40, 56)


def test_missing_clip_weights_is_a_one_line_error(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 1)
    args = ["generate", "--dataset", "voc", "--root", str(voc), "--out", str(tmp_path / "m"), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert (
        "missing weights ViT-B-16.pt" in result.output
        and "pseudolabel models download clip_vit_b16_openai" in result.output
    )
    assert "Traceback" not in result.output


def test_every_missing_checkpoint_is_named_in_one_message_before_any_work(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 1)
    args = ["generate", "--dataset", "voc", "--root", str(voc), "--out", str(tmp_path / "m"), "--device", "cpu"]
    args += ["--method", "grounded-sam", "--sam", "vit_h", "--exclude", "--exclusion-weights", "clipn_vit_b16"]
    result = runner.invoke(app, [*args, "--refine", "sam"])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0, result.output
    message = result.output.strip()
    assert message.startswith("error: missing weights groundingdino_swint_ogc.pth, sam_vit_h_4b8939.pth, "
                              "clipn_vit_b16.pt (the CLIPN project")  # fmt: skip
    assert "`pseudolabel models download gdino_swint sam_vit_h` fetches them where there is network" in message
    assert len(message) < 400
    assert not (tmp_path / "m" / "manifest.jsonl").exists()
    refine = ["refine", "--dataset", "voc", "--root", str(voc), "--out", str(tmp_path / "r"), "--masks", str(voc)]
    result = runner.invoke(app, [*refine, "--refine", "crf,sam", "--sam", "vit_l"])
    assert result.exit_code == 1 and "missing weights sam_vit_l_0b3195.pth: looked for" in result.output


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--shard", "2/2", "need 0 <= i < n"), ("--scales", "1,x", "comma-separated"), ("--device", "cuda:7", "CUDA")],
)
def test_bad_options_are_user_errors(tmp_path: Path, flag: str, value: str, message: str) -> None:
    voc = _dataset(tmp_path, 1)
    result = _generate(voc, tmp_path / "m", flag, value)
    assert result.exit_code == 1 and message in result.output, result.output


def test_cpu_workers_label_with_one_thread_each_and_cuda_workers_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pseudolabel.core.devices import LocalWorkers, local_workers

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert local_workers(None, cpu) == LocalWorkers(0)  # this process, every core's threads
    assert local_workers(0, cpu) == LocalWorkers(0)
    assert local_workers(3, cpu) == LocalWorkers(3, True)
    assert local_workers(2, cpu, batch_size=4) == LocalWorkers(2)  # a batch is labelled here
    monkeypatch.setattr("pseudolabel.core.devices.usable_cores", lambda: 16)
    assert local_workers(None, cuda) == LocalWorkers(4)  # decoding ahead of the GPU only
    assert local_workers(6, cuda) == LocalWorkers(6)
    monkeypatch.setattr("pseudolabel.core.devices.usable_cores", lambda: 2)
    assert local_workers(None, cuda) == LocalWorkers(1)


class RecordsItsProcess:
    """An image function that notes in each image's record which process labelled it, with how many
    torch threads, and (for one image) presses Ctrl-C as a terminal does: to every process of the run."""

    def __init__(self, labeler: ScoreRefineDecode, interrupt_at: str | None = None) -> None:
        self.labeler = labeler
        self.interrupt_at = interrupt_at

    def __call__(self, sample):
        import torch

        if sample.image_id == self.interrupt_at:
            os.kill(os.getppid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        result = self.labeler(sample)
        result.record["pid"], result.record["threads"] = os.getpid(), torch.get_num_threads()
        return result


def test_labelling_workers_run_one_thread_each_and_give_the_masks_of_one_process(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 4)
    dataset = VocDataset(voc, "train")
    labeler = RecordsItsProcess(ScoreRefineDecode(CamLabeler(tiny_clip(), dataset.prompts), unsure_margin=0.05))
    here = run_images(dataset, lambda: labeler, RunOptions(tmp_path / "here", tmp_path / "here_scores", num_workers=0))
    options = RunOptions(tmp_path / "workers", tmp_path / "workers_scores", num_workers=2, label_in_workers=True)
    in_workers = run_images(dataset, lambda: labeler, options)
    assert here.done == in_workers.done == 4
    records = read_manifest(tmp_path / "workers" / "manifest.jsonl")
    assert [r["id"] for r in records] == dataset.ids()
    assert len({r["pid"] for r in records}) == 2 and os.getpid() not in {r["pid"] for r in records}
    assert {r["threads"] for r in records} == {1}
    assert {r["pid"] for r in read_manifest(tmp_path / "here" / "manifest.jsonl")} == {os.getpid()}
    for image_id in dataset.ids():  # another thread count sums in another order: float rounding only
        ours, theirs = (load_scores(tmp_path / f"{name}_scores" / f"{image_id}.npz") for name in ("here", "workers"))
        np.testing.assert_allclose(ours.scores, theirs.scores, atol=2e-3)
        same = read_mask(tmp_path / "here" / f"{image_id}.png") == read_mask(tmp_path / "workers" / f"{image_id}.png")
        assert same.mean() > 0.99


def test_ctrl_c_with_labelling_workers_stops_cleanly_and_resume_does_the_rest(tmp_path: Path) -> None:
    voc = _dataset(tmp_path, 8)
    dataset = VocDataset(voc, "train")
    labeler = ScoreRefineDecode(CamLabeler(tiny_clip(), dataset.prompts), unsure_margin=0.05)
    options = RunOptions(tmp_path / "masks", num_workers=2, label_in_workers=True)
    summary = run_images(dataset, lambda: RecordsItsProcess(labeler, interrupt_at="im1"), options)
    assert summary.interrupted and 1 <= summary.done < 8 and summary.failed == 0
    done = [r["id"] for r in read_manifest(tmp_path / "masks" / "manifest.jsonl")]
    assert done == dataset.ids()[: len(done)]
    assert sorted(p.stem for p in (tmp_path / "masks").glob("*.png")) == done  # nothing else written
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "masks").glob("*.png")}
    resumed = run_images(dataset, lambda: RecordsItsProcess(labeler), options)
    assert not resumed.interrupted and resumed.already_done == len(done) and resumed.done == 8 - len(done)
    records = read_manifest(tmp_path / "masks" / "manifest.jsonl")
    assert [r["id"] for r in records] == dataset.ids()
    assert all((tmp_path / "masks" / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())


def test_the_summary_names_the_failed_images_and_their_causes(tmp_path: Path) -> None:
    voc = small_voc(tmp_path, count=8)
    for index in range(1, 8):
        (voc / "JPEGImages" / f"im{index}.jpg").write_bytes(b"not a jpeg")
    result = generate_tiny(voc, tmp_path / "out")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index("7 images failed (status 'failed' in the manifest):")
    shown = lines[start + 1 : start + 7]
    assert [line.split(":")[0] for line in shown[:5]] == ["  im1", "  im2", "  im3", "  im4", "  im5"]
    assert all("cannot decode image" in line and f"im{i}.jpg" in line for i, line in enumerate(shown[:5], 1))
    assert shown[5] == "  and 2 more"

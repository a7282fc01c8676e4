"""Inputs that do not deserve trust: labels files, COCO file names and VOC lists that point
outside the dataset, ids that would write outside --out, symlinks out of the image folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import make_coco, make_voc
from PIL import Image
from tiny_clip import write_tiny_config
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import UnsafePathError
from pseudolabel.core.safe_paths import check_id, id_path
from pseudolabel.runner.manifest import read_manifest

runner = CliRunner()


@pytest.mark.parametrize(
    "image_id", ["", "../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.", "..", "a\\..\\b", "a\x00b", "C:x"]
)
def test_ids_that_could_leave_their_folder_are_refused(image_id: str) -> None:
    with pytest.raises(UnsafePathError, match="cannot name a file inside the output folder"):
        id_path(Path("/out"), image_id, ".png")


def test_ids_with_sub_folders_map_to_sub_folders(tmp_path: Path) -> None:
    assert id_path(tmp_path, "2008/a.b", ".png") == tmp_path / "2008" / "a.b.png"
    assert str(check_id("...")) == "..."  # a plain name of dots is a file name, not a parent


def _files_outside(root: Path, allowed: list[Path]) -> list[Path]:
    """Files under ``root`` that are not under any of ``allowed``."""
    return [p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(a) for a in allowed)]


def _generate(root: Path, out: Path, dataset: str, *extra: str):
    args = ["generate", "--dataset", dataset, "--root", str(root), "--out", str(out), "--clip-weights", "random"]
    args += ["--clip-model", str(write_tiny_config(out.parent)), "--device", "cpu", "--num-workers", "0", *extra]
    return runner.invoke(app, args)


def _image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_folder_labels_pointing_outside_fail_their_line_and_write_nothing_outside(tmp_path: Path, kind: str) -> None:
    images, secret = tmp_path / "images", tmp_path / "secret"
    _image(images / "ok.jpg")
    _image(images / "sub" / "deep.jpg", 1)
    _image(secret / "x.jpg", 2)
    entries = [("ok.jpg", "cat"), ("../secret/x.jpg", "dog"), (str(secret / "x.jpg"), "dog"), ("sub/deep", "cat")]
    if kind == "csv":
        labels = tmp_path / "labels.csv"
        labels.write_text("image,labels\n" + "".join(f"{image},{name}\n" for image, name in entries))
    else:
        labels = tmp_path / "labels.json"
        labels.write_text(json.dumps({image: [name] for image, name in entries}))
    out = tmp_path / "out"
    result = _generate(images, out, "folder", "--labels", str(labels))
    assert result.exit_code == 0, result.output
    assert "2 images labelled, 2 failed" in result.output
    records = {r["id"]: r for r in read_manifest(out / "manifest.jsonl")}
    assert records["ok"]["status"] == "ok" and records["sub/deep"]["status"] == "ok"
    assert (out / "sub" / "deep.png").is_file()
    for bad in ("../secret/x.jpg", str(secret / "x.jpg")):
        assert records[bad]["status"] == "failed" and "outside" in records[bad]["error"]
        where = f"{labels}:{3 if bad.startswith('..') else 4}" if kind == "csv" else str(labels)
        assert records[bad]["error"].startswith(where)
    assert _files_outside(tmp_path, [images, secret, out, labels, tmp_path / "tiny_clip.json"]) == []
    assert sorted(p.name for p in secret.iterdir()) == ["x.jpg"]


def test_coco_file_names_outside_the_image_folder_fail_and_write_nothing_outside(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco", "train2014", {"a": [17], "b": [18], "c": [1]})
    data = json.loads((root / "annotations" / "instances_train2014.json").read_text())
    _image(tmp_path / "secret" / "b.jpg")
    data["images"][1]["file_name"] = "../../secret/b.jpg"
    data["images"][2]["file_name"] = str(tmp_path / "secret" / "b.jpg").replace("b.jpg", "c.jpg")
    _image(tmp_path / "secret" / "c.jpg")
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    result = _generate(root, out, "coco", "--split", "train2014")
    assert result.exit_code == 0, result.output
    records = {r["id"]: r for r in read_manifest(out / "manifest.jsonl")}
    assert records["a"]["status"] == "ok"
    for bad in ("b", "c"):
        assert records[bad]["status"] == "failed" and "outside" in records[bad]["error"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png"]
    assert sorted(p.name for p in (tmp_path / "secret").iterdir()) == ["b.jpg", "c.jpg"]


def test_voc_list_lines_and_symlinks_out_of_jpegimages_fail_naming_them(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"a": np.full((24, 32), 8, np.uint8), "b": np.full((24, 32), 8, np.uint8)})
    _image(tmp_path / "secret" / "s.jpg")
    os.symlink(tmp_path / "secret" / "s.jpg", voc / "JPEGImages" / "linked.jpg")
    split = voc / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("a\n\n..\nlinked\nx\\y\nb\n")
    out = tmp_path / "out"
    result = _generate(voc, out, "voc", "--labels", "none")
    assert result.exit_code == 0, result.output
    records = {r["id"]: r for r in read_manifest(out / "manifest.jsonl")}
    assert records["a"]["status"] == records["b"]["status"] == "ok"
    assert records[".."]["error"].startswith(f"{split}:3: image id '..'")
    assert records["x\\y"]["error"].startswith(f"{split}:5:")
    assert "resolves to" in records["linked"]["error"] and "outside" in records["linked"]["error"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]


def test_a_jpegimages_folder_that_is_itself_a_link_is_fine(tmp_path: Path) -> None:
    """Datasets often live on another disk: linking the whole image folder is allowed."""
    voc = make_voc(tmp_path / "src", {"a": np.full((24, 32), 8, np.uint8)})
    target = tmp_path / "elsewhere"
    (voc / "JPEGImages").rename(target)
    os.symlink(target, voc / "JPEGImages")
    result = _generate(voc, tmp_path / "out", "voc")
    assert result.exit_code == 0 and "1 images labelled, 0 failed" in result.output, result.output


def _voc(tmp_path: Path, count: int = 3) -> Path:
    return make_voc(tmp_path, {f"im{i}": np.full((24, 32), (8, 12, 15)[i % 3], np.uint8) for i in range(count)})


def _hold_lock(out: Path, shard: str) -> subprocess.Popen:
    """Another process holding the lock of ``shard`` in ``out`` until it is killed."""
    index, count = shard.split("/")
    code = (
        "import sys, time, pathlib; from pseudolabel.runner.lock import RunLock; "
        f"lock = RunLock(pathlib.Path({str(out)!r}), ({index}, {count})).__enter__(); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_the_same_folder_and_shard_stops_naming_the_first(tmp_path: Path) -> None:
    voc, out = _voc(tmp_path), tmp_path / "out"
    holder = _hold_lock(out, "0/1")
    try:
        result = _generate(voc, out, "voc")
        assert result.exit_code == 1
        assert f"is in use by pid {holder.pid} on" in result.output and "shard 0/1" in result.output
        assert not list(out.glob("*.png")) and not (out / "manifest.jsonl").exists()
        overlapping = _generate(voc, out, "voc", "--shard", "1/2")
        assert overlapping.exit_code == 1 and "overlap shard 1/2" in overlapping.output
    finally:
        holder.kill()
        holder.wait()


def test_shards_of_one_split_share_a_folder_and_a_dead_holders_lock_is_taken_over(tmp_path: Path) -> None:
    voc, out = _voc(tmp_path), tmp_path / "out"
    holder = _hold_lock(out, "1/2")
    try:
        first = _generate(voc, out, "voc", "--shard", "0/2")
        assert first.exit_code == 0 and "2 images labelled" in first.output, first.output
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".pseudolabel-lock-1of2.json").is_file()  # killed: its lock stays behind
    second = _generate(voc, out, "voc", "--shard", "1/2")
    assert second.exit_code == 0, second.output
    assert f"taking over the lock of pid {holder.pid}" in second.output and "1 images labelled" in second.output
    assert not list(out.glob(".pseudolabel-lock-*"))  # every run removes its lock


def _no_partial_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    for png in folder.rglob("*.png"):
        with Image.open(png) as image:
            image.verify()


@pytest.mark.parametrize("failing", ["png", "npz", "manifest"])
def test_a_failed_write_stops_with_one_line_and_a_resume_finishes(tmp_path: Path, monkeypatch, failing: str) -> None:
    import pseudolabel.core.files
    import pseudolabel.runner.manifest

    voc, out, scores = _voc(tmp_path, 4), tmp_path / "out", tmp_path / "out" / "scores"
    calls = {"n": 0}

    def failing_second_time(kind):
        def fail(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
            return real[kind](*args, **kwargs)

        return fail

    real = {"replace": os.replace, "dump": json.dumps}
    if failing == "manifest":
        monkeypatch.setattr(pseudolabel.runner.manifest, "json", SimpleNamespace(dumps=failing_second_time("dump")))
    else:
        suffix = f".{failing}"
        original = os.replace

        def replace(source, target):
            if str(target).endswith(suffix):
                return failing_second_time("replace")(source, target)
            return original(source, target)

        monkeypatch.setattr(pseudolabel.core.files.os, "replace", replace)
    result = _generate(voc, out, "voc", "--save-scores", str(scores))
    monkeypatch.undo()
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: cannot write ") and lines[-1].endswith("No space left on device")
    _no_partial_files(out)
    done = {r["id"] for r in read_manifest(out / "manifest.jsonl")}
    assert done == {p.stem for p in out.glob("*.png")} == {p.stem for p in scores.glob("*.npz")} == {"im0"}
    assert not list(out.glob(".pseudolabel-lock-*"))
    resumed = _generate(voc, out, "voc", "--save-scores", str(scores))
    assert resumed.exit_code == 0 and "3 images labelled, 0 failed, 1 already done" in resumed.output
    clean = _generate(voc, tmp_path / "clean", "voc", "--save-scores", str(tmp_path / "clean" / "scores"))
    assert clean.exit_code == 0
    for image_id in ("im0", "im1", "im2", "im3"):
        assert (out / f"{image_id}.png").read_bytes() == (tmp_path / "clean" / f"{image_id}.png").read_bytes()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 160 KiB tmpfs (skipped where this process may not mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_loses_nothing_and_a_resume_after_freeing_space_finishes(tmp_path: Path, small_disk: Path) -> None:
    masks = {f"im{i}": np.full((120, 160), (8, 12, 15)[i % 3], np.uint8) for i in range(6)}
    voc, out = make_voc(tmp_path, masks), small_disk / "out"
    result = _generate(voc, out, "voc", "--save-scores", str(out / "scores"))
    assert result.exit_code == 1, result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("error: cannot write ") and last.endswith("No space left on device"), last
    _no_partial_files(out)
    records = read_manifest(out / "manifest.jsonl")
    assert (
        {r["id"] for r in records}
        == {p.stem for p in out.glob("*.png")}
        == {p.stem for p in (out / "scores").glob("*.npz")}
    )
    assert len(records) < 6
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    resumed = _generate(voc, out, "voc", "--save-scores", str(out / "scores"))
    assert resumed.exit_code == 0, resumed.output
    assert f"{6 - len(records)} images labelled, 0 failed, {len(records)} already done" in resumed.output
    assert len(read_manifest(out / "manifest.jsonl")) == 6


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_error_prints_one_line_and_saves_the_traceback(tmp_path: Path, monkeypatch, debug: bool) -> None:
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr("pseudolabel.labelers.cam.background_score", broken)
    voc, out = _voc(tmp_path), tmp_path / "out"
    args = ["generate", "--dataset", "voc", "--root", str(voc), "--out", str(out), "--clip-weights", "random"]
    args += ["--clip-model", str(write_tiny_config(tmp_path)), "--device", "cpu", "--num-workers", "0"]
    result = runner.invoke(app, ["--debug", *args] if debug else args)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # handled: no traceback escapes
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("error: internal error (a bug): ZeroDivisionError: a bug deep inside at ")
    assert f"traceback saved to {out / 'error.log'}" in last
    log = (out / "error.log").read_text()
    assert "Traceback (most recent call last)" in log and "def broken" not in log and "ZeroDivisionError" in log
    assert ("Traceback (most recent call last)" in result.output) == debug
    assert not list(out.glob(".pseudolabel-lock-*"))


def test_training_takes_the_folder_lock_and_a_failed_checkpoint_write_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from train_helpers import synthetic_voc

    voc, masks = synthetic_voc(tmp_path)
    run = tmp_path / "run"
    args = ["train-seg", "--dataset", "voc", "--root", str(voc), "--masks", str(masks), "--out", str(run)]
    args += ["--backbone", "resnet18", "--backbone-weights", "random", "--crop-size", "48", "--batch-size", "2"]
    args += ["--device", "cpu", "--num-workers", "0", "--iters", "2", "--save-every", "1"]
    holder = _hold_lock(run, "0/1")
    try:
        locked = runner.invoke(app, args)
        assert locked.exit_code == 1 and f"in use by pid {holder.pid}" in locked.output
    finally:
        holder.kill()
        holder.wait()
    (run / ".pseudolabel-lock-0of1.json").unlink()

    def full_disk(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:659] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr("pseudolabel.train.trainer.torch.save", full_disk)
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1
    last = [line for line in failed.output.splitlines() if line.strip()][-1]
    assert last.startswith(f"error: cannot write {run / 'last.pt'}: [enforce fail") and "PytorchStreamWriter" in last
    assert not [p for p in run.iterdir() if p.suffix in (".pt", ".tmp") or p.name.endswith(".tmp")]

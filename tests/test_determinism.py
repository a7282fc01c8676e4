"""Every output is a function of the image and the settings only: an uninterrupted run, a run
killed with SIGKILL and resumed, a sharded run and an image labelled alone write the same bytes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tiny_clip import write_tiny_config

from pseudolabel.runner.manifest import read_manifest

EXAMPLE_VOC = Path(__file__).resolve().parents[1] / "examples" / "voc" / "VOC2012"
IDS = ["2026_000001", "2026_000002", "2026_000003", "2026_000004"]


def _command(voc: Path, out: Path, config: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pseudolabel", "generate", "--dataset", "voc", "--root", str(voc),
        "--out", str(out / "masks"), "--save-scores", str(out / "scores"), "--clip-model", str(config),
        "--clip-weights", "random", "--device", "cpu", "--num-workers", "0", "--synonyms", "pole", "--exclude",
        *extra,
    ]  # fmt: skip


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_environment())
    assert result.returncode == 0, result.stdout + result.stderr


def _environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PSEUDOLABEL_OFFLINE": "1"}


def _outputs(out: Path) -> dict[str, bytes]:
    files = sorted((out / "masks").glob("*.png")) + sorted((out / "scores").glob("*.npz"))
    return {f"{path.parent.name}/{path.name}": path.read_bytes() for path in files}


def _killed_then_resumed(tmp_path: Path, config: Path) -> Path:
    """A run SIGKILLed after two images, then resumed. The third image is a FIFO at first, so the
    run blocks on it after writing two images: the kill point does not depend on timing."""
    voc = tmp_path / "voc_fifo"
    shutil.copytree(EXAMPLE_VOC, voc)
    blocked = voc / "JPEGImages" / f"{IDS[2]}.jpg"
    blocked.unlink()
    os.mkfifo(blocked)
    out = tmp_path / "killed"
    command = _command(voc, out, config)
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "masks" / "manifest.jsonl"
    deadline = time.monotonic() + 240
    while not (manifest.is_file() and len(read_manifest(manifest)) >= 2):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the run did not label two images in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()
    assert {p.stem for p in (out / "masks").glob("*.png")} == set(IDS[:2])
    blocked.unlink()
    shutil.copy(EXAMPLE_VOC / "JPEGImages" / blocked.name, blocked)
    _run(*_command(voc, out, config))
    records = read_manifest(manifest)
    assert [r["id"] for r in records] == IDS  # the resume redid nothing finished
    return out


def test_resume_shards_and_single_images_write_identical_bytes(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path)
    whole = tmp_path / "whole"
    _run(*_command(EXAMPLE_VOC, whole, config))
    expected = _outputs(whole)
    assert len(expected) == 2 * len(IDS)

    assert _outputs(_killed_then_resumed(tmp_path, config)) == expected

    sharded = tmp_path / "sharded"
    for shard in ("1/2", "0/2"):
        _run(*_command(EXAMPLE_VOC, sharded, config, "--shard", shard))
    assert _outputs(sharded) == expected

    alone = tmp_path / "alone"  # the last image, labelled alone in a fresh process
    _run(*_command(EXAMPLE_VOC, alone, config, "--shard", "3/4"))
    last = {name: data for name, data in expected.items() if IDS[3] in name}
    assert _outputs(alone) == last

"""`torchrun -m pseudolabel generate`: each rank labels its shard; rank 0 prints one summary."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import small_voc
from tiny_clip import write_tiny_config

from pseudolabel.core.errors import ConfigError
from pseudolabel.runner.manifest import read_manifest
from pseudolabel.runner.torchrun import local_device, run_shard


def _generate_args(voc: Path, out: Path, config: Path) -> list[str]:
    return [
        "generate", "--dataset", "voc", "--root", str(voc), "--out", str(out), "--clip-weights", "random",
        "--clip-model", str(config), "--device", "cpu", "--num-workers", "0",
    ]  # fmt: skip


def test_torchrun_ranks_split_the_images_and_rank_0_sums_them_up(tmp_path: Path) -> None:
    voc, config = small_voc(tmp_path), write_tiny_config(tmp_path)
    with socket.socket() as probe:  # a free port for the rendezvous, so parallel test runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [*torchrun, "-m", "pseudolabel", *_generate_args(voc, tmp_path / "ddp", config)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("images labelled") == 1, done.stdout
    assert "5 images labelled, 0 failed, 0 already done (of 5 selected)" in done.stdout
    ranks = [read_manifest(tmp_path / "ddp" / f"manifest-shard{rank}of2.jsonl") for rank in range(2)]
    assert [[r["id"] for r in records] for records in ranks] == [["im0", "im2", "im4"], ["im1", "im3"]]
    single = subprocess.run(
        [sys.executable, "-m", "pseudolabel", *_generate_args(voc, tmp_path / "one", config)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    for index in range(5):
        assert (tmp_path / "ddp" / f"im{index}.png").read_bytes() == (tmp_path / "one" / f"im{index}.png").read_bytes()


def test_shard_comes_from_torchrun_and_may_not_be_given_twice(monkeypatch) -> None:
    assert run_shard("1/3") == (1, 3)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert run_shard("0/1") == (2, 4)
    with pytest.raises(ConfigError, match="both split the images"):
        run_shard("1/3")
    assert local_device("cpu") == "cpu"


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs CUDA")
def test_each_rank_takes_its_own_gpu(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device("auto") == "cuda:1"


def test_a_user_error_under_torchrun_is_one_line_and_names_itself_in_torchruns_report(tmp_path: Path) -> None:
    """Trainable batch norm needs SyncBatchNorm, which has no CPU backend: every rank stops with the
    same user error. Rank 0 prints it once; each rank hands it to torchrun, whose failure report
    then shows it instead of a link to its docs (torchrun's own traceback is torch's to print)."""
    voc = Path(__file__).resolve().parents[1] / "examples" / "voc"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port]
    args = ["train-seg", "--dataset", "voc", "--root", str(voc / "VOC2012"), "--masks", str(voc / "coarse_masks"),
            "--out", str(tmp_path / "run"), "--backbone", "resnet18", "--backbone-weights", "random", "--iters", "2",
            "--batch-size", "4", "--crop-size", "48", "--num-workers", "0", "--device", "cpu"]  # fmt: skip
    done = subprocess.run([*torchrun, "-m", "pseudolabel", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    message = "error: trainable batch norm needs SyncBatchNorm, which runs on GPUs only; use --freeze-bn on the CPU"
    output = done.stdout + done.stderr
    assert output.count(f"\n{message}\n") == 1, output
    assert output.count(f"traceback : {message}") == 2 and "To enable traceback see" not in output

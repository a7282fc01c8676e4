"""DeepLabV2 model, optimiser schedule, loss, data order, training, resume, DDP, NaN stop, predict."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from train_helpers import calibrated_resnet18, ddp_worker, small_config, synthetic_voc, train_seg_args
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.masks import read_mask
from pseudolabel.datasets.voc import VocDataset
from pseudolabel.models.deeplab import DeepLabV2
from pseudolabel.runner.manifest import read_manifest
from pseudolabel.train.data import GlobalSamples, TrainingCrops
from pseudolabel.train.trainer import (
    TrainingDiverged,
    load_checkpoint,
    sample_mean_cross_entropy,
    train,
)

runner = CliRunner()


def test_resnet101_deeplab_parameter_count_and_output_stride() -> None:
    model = DeepLabV2(21, "resnet101").eval()
    reference = torchvision.models.resnet101()
    convolutions = sum(p.numel() for n, p in reference.named_parameters() if p.dim() == 4)  # BN is frozen: buffers
    aspp = 4 * (3 * 3 * 2048 * 21 + 21)
    assert sum(p.numel() for p in model.parameters()) == convolutions + aspp
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 321, 321)).shape == (1, 21, 41, 41)
        assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 21, 8, 12)
    dilations = {
        m.dilation for n, m in model.named_modules() if n.startswith("layer4") and isinstance(m, torch.nn.Conv2d)
    }
    assert (4, 4) in dilations and all(
        m.stride == (1, 1) for m in model.layer4.modules() if isinstance(m, torch.nn.Conv2d)
    )


def test_aspp_branches_sum_with_the_published_rates_and_init() -> None:
    model = DeepLabV2(21, "resnet18")
    assert [b.dilation[0] for b in model.aspp.branches] == [6, 12, 18, 24]
    weights = torch.cat([b.weight.flatten() for b in model.aspp.branches])
    assert abs(weights.std().item() - 0.01) < 1e-3 and all((b.bias == 0).all() for b in model.aspp.branches)
    features = torch.randn(1, 512, 9, 9)
    expected = sum(
        F.conv2d(features, b.weight, b.bias, padding=b.padding, dilation=b.dilation) for b in model.aspp.branches
    )
    torch.testing.assert_close(model.aspp(features), expected)


def test_loss_is_the_mean_of_per_sample_means_and_ignores_255() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, :3] = 255  # sample 0 has 4 valid pixels, sample 1 has 16
    per_sample = [F.cross_entropy(logits[i : i + 1], labels[i : i + 1], ignore_index=255) for i in range(2)]
    assert sample_mean_cross_entropy(logits, labels, False).item() == pytest.approx(
        ((per_sample[0] + per_sample[1]) / 2).item()
    )
    single = torch.zeros(1, 2, 1, 4)
    single[0, 0] = 5.0  # predicts class 0 everywhere
    target = torch.tensor([[[0, 0, 0, 1]]])
    pixel = F.cross_entropy(single, target, reduction="none")[0, 0]
    balanced = sample_mean_cross_entropy(single, target, True).item()
    assert balanced == pytest.approx((pixel[:3].mean() + pixel[3]).item() / 2)  # each class counts equally


def test_data_order_and_augmentation_depend_only_on_seed_and_sample_number(tmp_path: Path) -> None:
    voc, masks = synthetic_voc(tmp_path)
    crops = TrainingCrops(VocDataset(voc, "train"), masks, 40, seed=3)
    first, again = crops[5], crops[5]
    torch.testing.assert_close(first[0], again[0])
    assert {crops.image_id(k) for k in range(4)} == set(VocDataset(voc, "train").ids())  # one epoch = a permutation
    assert first[0].shape == (3, 40, 40) and first[1].shape == (40, 40)
    single = list(GlobalSamples(2, 4, micro_batch=2, accumulate=2, rank=0, world=1))
    ranks = [list(GlobalSamples(2, 4, micro_batch=1, accumulate=2, rank=r, world=2)) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == single == list(range(8, 16))


def test_small_model_overfits_a_handful_of_images(tmp_path: Path) -> None:
    voc, masks = synthetic_voc(tmp_path, size=96)
    config = small_config(
        tmp_path / "run", masks, "random", iterations=40, batch_size=4, crop_size=96, lr=5e-3, msc=False,
        train_scales=(1.0,),
    )  # fmt: skip
    train(VocDataset(voc, "train"), config)
    predict = ["predict", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--dataset", "voc", "--root", str(voc),
               "--device", "cpu", "--scales", "1.0", "--no-flip"]  # fmt: skip
    predicted = runner.invoke(app, [*predict, "--out", str(tmp_path / "pred"), "--num-workers", "0"])
    assert predicted.exit_code == 0, predicted.output
    out = tmp_path / "score.json"
    scored = runner.invoke(app, ["score", "--pred", str(tmp_path / "pred"), "--gt", str(masks), "--json", str(out)])
    assert scored.exit_code == 0, scored.output
    assert json.loads(out.read_text())["miou"] > 0.8
    # two one-thread labelling processes: the masks of one process, up to float rounding at ties
    in_workers = runner.invoke(app, [*predict, "--out", str(tmp_path / "pred_workers"), "--num-workers", "2"])
    assert in_workers.exit_code == 0, in_workers.output
    for path in sorted((tmp_path / "pred").glob("*.png")):
        assert np.mean(read_mask(path) == read_mask(tmp_path / "pred_workers" / path.name)) > 0.99


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    voc, masks = synthetic_voc(tmp_path)
    dataset = VocDataset(voc, "train")
    train(dataset, small_config(tmp_path / "straight", masks, "random", iterations=6))
    train(dataset, small_config(tmp_path / "resumed", masks, "random", iterations=6), stop_after=3)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["iteration"] == 3
    train(dataset, small_config(tmp_path / "resumed", masks, "random", iterations=6, resume=True))
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert resumed["iteration"] == 6
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, atol=1e-6, rtol=1e-5)
    iterations = [r["iter"] for r in read_manifest(tmp_path / "resumed" / "metrics.jsonl")]
    assert iterations == [1, 2, 3, 4, 5, 6]  # nothing repeated


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_ddp_matches_one_process(tmp_path: Path) -> None:
    voc, masks = synthetic_voc(tmp_path)
    weights = str(calibrated_resnet18(tmp_path / "resnet18.pth"))
    train(VocDataset(voc, "train"), small_config(tmp_path / "single", masks, weights))
    torch.multiprocessing.spawn(
        ddp_worker, args=(2, _free_port(), str(voc), str(masks), str(tmp_path / "ddp"), weights), nprocs=2, join=True
    )
    single = [r["loss"] for r in read_manifest(tmp_path / "single" / "metrics.jsonl")]
    ddp = [r["loss"] for r in read_manifest(tmp_path / "ddp" / "metrics.jsonl")]
    assert len(single) == len(ddp) == 4
    # The first loss comes before any update; later ones follow updates whose float sums split
    # differently over 2 processes, and this high-rate run amplifies that: without vector units
    # (ATEN_CPU_CAPABILITY=default) the 4th loss moved 8.6e-4 relative and a weight 1.3e-4, on
    # AVX-512 3e-8 and 6e-8. A wrong reduction (a sum instead of a mean) moves them by tens of percent.
    assert ddp[0] == pytest.approx(single[0], rel=1e-5)
    assert ddp == pytest.approx(single, rel=5e-3)
    first = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    second = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    for key in first:
        torch.testing.assert_close(second[key], first[key], atol=1e-3, rtol=1e-3)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    voc, masks = synthetic_voc(tmp_path)
    config = small_config(tmp_path / "run", masks, "random", iterations=50, lr=1e12, save_every=1)
    with pytest.raises(
        TrainingDiverged, match=r"loss became (nan|inf) at iteration (\d+).*last good checkpoint"
    ) as caught:
        train(VocDataset(voc, "train"), config)
    failed = int(caught.value.args[0].split("at iteration ")[1].split(";")[0])
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == failed - 1


def test_train_and_predict_commands(tmp_path: Path) -> None:
    voc, masks = synthetic_voc(tmp_path)
    run = tmp_path / "run"
    args = [*train_seg_args(voc, masks, run), "--val-split", "train", "--val-every", "2"]
    first = runner.invoke(app, [*args, "--iters", "3"])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(app, [*args, "--iters", "4", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "finished at iteration 4" in resumed.output
    records = read_manifest(run / "metrics.jsonl")
    assert [r["iter"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert any("val_miou" in r for r in records)
    assert (run / "config.yaml").is_file()
    predicted = runner.invoke(
        app,
        ["predict", "--checkpoint", str(run / "last.pt"), "--dataset", "voc", "--root", str(voc), "--out",
         str(tmp_path / "pred"), "--device", "cpu", "--num-workers", "0", "--crf"],
    )  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    assert read_mask(tmp_path / "pred" / "s0.png").shape == (64, 64)
    bad = runner.invoke(app, [*args, "--iters", "4", "--batch-size", "3"])
    assert bad.exit_code == 1 and "must be a multiple of --accumulate 2" in bad.output
    missing = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "none.pt"), "--dataset", "voc",
                                  "--root", str(voc), "--out", str(tmp_path / "p2")])  # fmt: skip
    assert missing.exit_code == 1 and "none.pt does not exist" in missing.output


def test_torchrun_command_trains_with_ddp_like_one_process(tmp_path: Path) -> None:
    voc, masks = synthetic_voc(tmp_path)
    weights = calibrated_resnet18(tmp_path / "resnet18.pth")
    args = ["train-seg", "--dataset", "voc", "--root", str(voc), "--masks", str(masks), "--backbone", "resnet18"]
    args += ["--backbone-weights", str(weights), "--iters", "3", "--crop-size", "48", "--batch-size", "2"]
    args += ["--accumulate", "1", "--log-every", "1", "--device", "cpu", "--num-workers", "0"]
    single = runner.invoke(app, [*args, "--out", str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
    ]
    result = subprocess.run(
        [*launcher, "-m", "pseudolabel", *args, "--out", str(tmp_path / "ddp")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("finished at iteration 3") == 1  # only rank 0 reports
    losses = [[r["loss"] for r in read_manifest(tmp_path / run / "metrics.jsonl")] for run in ("single", "ddp")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)

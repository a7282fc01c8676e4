"""Shared pieces of the training tests (importable by spawned DDP processes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchvision

from pseudolabel.datasets.voc import VocDataset
from pseudolabel.train.trainer import TrainConfig, train


def synthetic_voc(root: Path, count: int = 4, size: int = 64) -> tuple[Path, Path]:
    """Images with one bright square of a class on a dark background; GT masks double as training masks."""
    from helpers import make_voc

    rng = np.random.default_rng(0)
    masks = {}
    for index in range(count):
        mask = np.zeros((size, size), np.uint8)
        top, left = rng.integers(4, size // 2, size=2)
        mask[top : top + size // 3, left : left + size // 3] = (8, 15)[index % 2]
        masks[f"s{index}"] = mask
    voc = make_voc(root, masks)
    for image_id, mask in masks.items():  # paint the classes so they can be learnt
        from PIL import Image

        rgb = np.full((size, size, 3), 30, np.uint8)
        rgb[mask == 8] = (220, 40, 40)
        rgb[mask == 15] = (40, 40, 220)
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
    return voc, voc / "SegmentationClass"


def train_seg_args(voc: Path, masks: Path, out: Path) -> list[str]:
    """``train-seg`` on the synthetic data with a random ResNet-18, 48 px crops, batches of 2, on the
    CPU in this process, logging every iteration (iterations and the rest left to the caller)."""
    args = ["train-seg", "--dataset", "voc", "--root", str(voc), "--masks", str(masks), "--out", str(out)]
    args += ["--backbone", "resnet18", "--backbone-weights", "random", "--crop-size", "48", "--batch-size", "2"]
    return [*args, "--device", "cpu", "--num-workers", "0", "--log-every", "1"]


def calibrated_resnet18(path: Path) -> Path:
    """A random torchvision ResNet-18 whose BN statistics were measured on random images, so that
    frozen BN normalises: a stand-in for ImageNet weights in torchvision's format."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64))
    torch.save(model.state_dict(), path)
    return path


def ddp_worker(rank: int, world: int, port: int, voc: str, masks: str, out: str, weights: str) -> None:
    """One DDP process of the equality test."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0"
    )
    train(VocDataset(voc, "train"), small_config(Path(out), Path(masks), weights))
    torch.distributed.destroy_process_group()


def small_config(out: Path, masks: Path, weights: str, **changes: object) -> TrainConfig:
    """ResNet-18 DeepLab on 48 px crops, CPU, one record per iteration."""
    settings = {
        "out_dir": out, "masks_dir": masks, "iterations": 4, "batch_size": 2, "accumulate": 1, "crop_size": 48,
        "lr": 1e-3, "backbone": "resnet18", "backbone_weights": weights, "log_every": 1, "save_every": 1000,
        "num_workers": 0, "device": "cpu", "msc": True,
    }  # fmt: skip
    settings.update(changes)
    return TrainConfig(**settings)

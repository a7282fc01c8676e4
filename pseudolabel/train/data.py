"""Training crops whose order and augmentation are a pure function of (seed, sample number).

Global sample k belongs to epoch k // N and takes position k % N of that epoch's permutation;
its random scale, crop and flip come from a generator seeded with (seed, k). So a resumed run,
or any split of a global batch over DDP processes, sees exactly the samples an uninterrupted
single-process run would.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from pseudolabel.core.errors import MaskError, SampleError, listed
from pseudolabel.core.masks import IGNORE_INDEX, read_mask
from pseudolabel.core.safe_paths import id_path
from pseudolabel.datasets.base import Dataset
from pseudolabel.models.caffe_resnet import CAFFE_MEAN_BGR

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)


def model_input(rgb: np.ndarray, style: str) -> torch.Tensor:
    """uint8 or float [H, W, 3] RGB -> float32 [3, H, W] as the backbone expects: ``imagenet``
    (RGB / 255, ImageNet mean/std: torchvision) or ``caffe`` (BGR 0-255 minus
    :data:`CAFFE_MEAN_BGR`: deeplab-pytorch). The mean colour becomes 0 in both."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
    if style == "caffe":
        return image.flip(0) - torch.tensor(CAFFE_MEAN_BGR).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image / 255 - mean) / std


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The permutation of one epoch, computed once per (seed, epoch) instead of once per sample."""
    return np.random.default_rng((seed, epoch)).permutation(count)


class TrainingCrops(torch.utils.data.Dataset):
    """Item k = (image [3, S, S], labels [S, S] int64) for global sample number k.

    Images come from a dataset split, labels from ``masks_dir/<id>.png`` (any palette PNG).
    Augmentation as deeplab-pytorch: random scale from ``scales`` (sizes truncated with
    ``int``; the float image resized bilinearly by OpenCV, the labels nearest by PIL), pad the
    image with the mean (0 after :func:`model_input` in ``style``) and the labels with 255 up to
    the crop, random crop, random horizontal flip.
    """

    def __init__(
        self,
        dataset: Dataset,
        masks_dir: Path,
        crop_size: int,
        seed: int,
        scales: tuple[float, ...] = TRAIN_SCALES,
        style: str = "imagenet",
    ) -> None:
        self.dataset = dataset
        self.ids = dataset.ids()
        self.masks_dir = masks_dir
        self.crop_size = crop_size
        self.seed = seed
        self.scales = scales
        self.style = style

    def __len__(self) -> int:
        return len(self.ids)

    def image_id(self, sample_number: int) -> str:
        """The id at sample k: position k % N of epoch k // N's permutation."""
        epoch, position = divmod(sample_number, len(self.ids))
        return self.ids[epoch_order(self.seed, epoch, len(self.ids))[position]]

    def __getitem__(self, sample_number: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_id = self.image_id(sample_number)
        rgb = self.dataset.load(image_id).rgb
        labels = read_mask(id_path(self.masks_dir, image_id, ".png"))
        if labels.shape != rgb.shape[:2]:
            raise MaskError(
                f"mask {self.masks_dir / image_id}.png is {labels.shape[::-1]} but its image is {rgb.shape[1::-1]}"
            )
        rng = np.random.default_rng((self.seed, sample_number, 1))
        scale = float(rng.choice(self.scales))
        size = (max(1, int(rgb.shape[1] * scale)), max(1, int(rgb.shape[0] * scale)))
        resized = cv2.resize(rgb.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        labels = np.asarray(Image.fromarray(labels).resize(size, Image.Resampling.NEAREST))
        image = model_input(resized, self.style)
        target = torch.from_numpy(labels.astype(np.int64))
        pad_h, pad_w = max(0, self.crop_size - size[1]), max(0, self.crop_size - size[0])
        image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        target = torch.nn.functional.pad(target, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(rng.integers(0, image.shape[1] - self.crop_size + 1))
        left = int(rng.integers(0, image.shape[2] - self.crop_size + 1))
        image = image[:, top : top + self.crop_size, left : left + self.crop_size]
        target = target[top : top + self.crop_size, left : left + self.crop_size]
        if rng.random() < 0.5:
            image, target = image.flip(-1), target.flip(-1)
        return image.contiguous(), target.contiguous()


class GlobalSamples(torch.utils.data.Sampler[int]):
    """Sample numbers of one process: for each iteration from ``start_iteration``, each
    accumulation step, this rank's slice of the global micro-batch."""

    def __init__(
        self, start_iteration: int, total_iterations: int, micro_batch: int, accumulate: int, rank: int, world: int
    ) -> None:
        self.start = start_iteration
        self.total = total_iterations
        self.micro_batch = micro_batch
        self.accumulate = accumulate
        self.rank = rank
        self.world = world

    def __iter__(self) -> Iterator[int]:
        global_micro = self.micro_batch * self.world
        for iteration in range(self.start, self.total):
            for step in range(self.accumulate):
                first = (iteration * self.accumulate + step) * global_micro + self.rank * self.micro_batch
                yield from range(first, first + self.micro_batch)

    def __len__(self) -> int:
        return (self.total - self.start) * self.accumulate * self.micro_batch


def check_masks(dataset: Dataset, masks_dir: Path) -> None:
    """Fail early, listing them, when training masks are missing."""
    missing = [i for i in dataset.ids() if not id_path(masks_dir, i, ".png").is_file()]
    if missing:
        raise SampleError(
            f"{len(missing)} of {len(dataset.ids())} training masks are missing in {masks_dir}: {listed(missing)}"
        )

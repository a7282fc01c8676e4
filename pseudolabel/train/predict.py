"""Predict with a trained DeepLabV2 as deeplab-pytorch tests it: the max over scales (and, if asked,
flips) of the logits on the first scale's grid, upsampled to the image, softmax, optional CRF."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.core.masks import read_mask
from pseudolabel.core.scoremaps import ScoreMaps, decode
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Dataset, Sample
from pseudolabel.evaluate.metrics import Counts, count_pair, summarize
from pseudolabel.models.caffe_resnet import from_deeplab_pytorch, is_deeplab_pytorch
from pseudolabel.models.deeplab import CAFFE_BACKBONE, MSC_SCALES, DeepLabV2, fuse_max
from pseudolabel.models.weights import resolve_weights
from pseudolabel.runner.loop import ImageResult
from pseudolabel.train.data import model_input
from pseudolabel.train.trainer import load_checkpoint


def resolve_checkpoint(name: str) -> Path:
    """``--checkpoint``: a registry name of kind ``segmenter`` or a file; never ``random``."""
    path = resolve_weights(name, "segmenter")
    if path is None:
        raise ConfigError("--checkpoint needs trained weights, not random")
    return path


def model_from_checkpoint(path: Path, num_classes: int, device: torch.device) -> DeepLabV2:
    """Rebuild the network from a ``train-seg`` checkpoint (``last.pt``) or a deeplab-pytorch
    ``DeepLabV2_ResNet101_MSC`` state dict (e.g. ``deeplabv2_resnet101_msc-vocaug-20000.pth``),
    both read with ``weights_only=True``."""
    state = load_checkpoint(path)
    if is_deeplab_pytorch(state):
        model = DeepLabV2(num_classes, CAFFE_BACKBONE)
        try:
            model.load_state_dict(from_deeplab_pytorch(state))
        except RuntimeError as error:
            detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
            raise WeightsError(
                f"deeplab-pytorch checkpoint {path} is not a DeepLabV2 for {num_classes} classes: {detail}"
            ) from error
    else:
        if int(state["num_classes"]) != num_classes:
            raise ConfigError(f"checkpoint {path} has {state['num_classes']} classes but the dataset has {num_classes}")
        model = DeepLabV2(num_classes, str(state["backbone"]), bool(state["freeze_bn"]))
        model.load_state_dict(state["model"])
    model.requires_grad_(False)
    return model.to(device).eval()


@torch.no_grad()
def predict_probabilities(
    model: DeepLabV2,
    rgb: np.ndarray,
    scales: tuple[float, ...] = MSC_SCALES,
    flip: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Class probabilities float32 [K, H, W]: the logits of every scale (and flipped view), from
    the network under ``autocast_dtype`` (None: fp32), are max-fused in fp32 on the first scale's
    logit grid (deeplab-pytorch's MSC), then resized bilinearly to the image and soft-maxed."""
    device = next(model.parameters()).device
    image = model_input(rgb, model.input_style)[None].to(device)
    logits = []
    for scale in scales:
        scaled = (
            image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        )
        views = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            output = model(views).float()
        logits += [output[:1], output[1:].flip(-1)] if flip else [output]
    fused = fuse_max(logits)
    return F.interpolate(fused, size=rgb.shape[:2], mode="bilinear", align_corners=False)[0].softmax(dim=0)


def val_miou_evaluator(dataset: Dataset) -> Callable[[DeepLabV2], float]:
    """A function giving a model's mIoU on the images of ``dataset`` that have GT (single scale, no flip).

    Raises:
        ConfigError: the split has no GT masks.
    """
    dataset.prepare_gt()
    with_gt = [image_id for image_id in dataset.ids() if dataset.gt_path(image_id) is not None]
    if not with_gt:
        split = getattr(dataset, "split", "")
        raise ConfigError(f"--val-split {split} of {dataset.name} has no GT masks to compute val mIoU against")

    def evaluate(model: DeepLabV2) -> float:
        model.eval()
        counts = Counts(dataset.num_classes)
        for image_id in with_gt:
            sample = dataset.load(image_id)
            prediction = predict_probabilities(model, sample.rgb, (1.0,), flip=False).argmax(dim=0)
            counts.add(
                count_pair(read_mask(sample.gt_path), prediction.cpu().numpy().astype(np.uint8), dataset.num_classes)
            )
        return round(float(summarize(counts)["miou"] or 0.0), 6)

    return evaluate


@dataclass
class SegmentationPredictor:
    """Labeler stage for ``predict``: a trained model's labels, optionally refined by a CRF refiner."""

    model: DeepLabV2
    scales: tuple[float, ...] = MSC_SCALES
    flip: bool = False
    refiner: Any = None
    autocast_dtype: torch.dtype | None = None

    def __call__(self, sample: Sample) -> ImageResult:
        record = StageRecord()
        with record.timed("predict_s"):
            probabilities = (
                predict_probabilities(self.model, sample.rgb, self.scales, self.flip, self.autocast_dtype).cpu().numpy()
            )
        maps = ScoreMaps(probabilities, tuple(range(self.model.num_classes)))
        if self.refiner is not None:
            maps = self.refiner(sample.rgb, maps, record)
        return ImageResult(decode(maps), None, record)

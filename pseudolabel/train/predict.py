"""Predict with a trained DeepLabV2: max over scales (and flips) of the logits, softmax, optional CRF."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.datasets.base import Dataset, Sample
from pseudolabel.errors import ConfigError
from pseudolabel.masks import read_mask
from pseudolabel.metrics import Counts, count_pair, summarize
from pseudolabel.models.deeplab import MSC_SCALES, DeepLabV2
from pseudolabel.pipeline import Labelled
from pseudolabel.scoremaps import ScoreMaps, decode
from pseudolabel.train.data import normalize_image
from pseudolabel.train.trainer import load_checkpoint


def model_from_checkpoint(path: Path, num_classes: int, device: torch.device) -> DeepLabV2:
    """Rebuild the trained network from ``last.pt`` (weights-only load)."""
    state = load_checkpoint(path)
    if int(state["num_classes"]) != num_classes:
        raise ConfigError(f"checkpoint {path} has {state['num_classes']} classes but the dataset has {num_classes}")
    model = DeepLabV2(num_classes, str(state["backbone"]), bool(state["freeze_bn"]))
    model.load_state_dict(state["model"])
    model.requires_grad_(False)
    return model.to(device).eval()


@torch.no_grad()
def predict_probabilities(
    model: DeepLabV2, rgb: np.ndarray, scales: tuple[float, ...] = MSC_SCALES, flip: bool = True
) -> torch.Tensor:
    """Class probabilities float32 [K, H, W]: softmax of the max over scales (and flips) of the
    logits, each resized bilinearly to the image."""
    device = next(model.parameters()).device
    image = normalize_image(rgb)[None].to(device)
    size = rgb.shape[:2]
    best = None
    for scale in scales:
        scaled = (
            image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        )
        views = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        logits = F.interpolate(model(views).float(), size=size, mode="bilinear", align_corners=False)
        if flip:
            logits = torch.stack([logits[0], logits[1].flip(-1)])
        merged = logits.max(dim=0).values
        best = merged if best is None else torch.maximum(best, merged)
    return best.softmax(dim=0)


def val_miou_evaluator(dataset: Dataset) -> Callable[[DeepLabV2], float]:
    """A function giving a model's mIoU on the images of ``dataset`` that have GT (single scale, no flip).

    Raises:
        ConfigError: the split has no GT masks.
    """
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
    flip: bool = True
    refiner: Any = None

    def __call__(self, sample: Sample) -> Labelled:
        start = time.perf_counter()
        probabilities = predict_probabilities(self.model, sample.rgb, self.scales, self.flip).cpu().numpy()
        maps = ScoreMaps(probabilities, tuple(range(self.model.num_classes)))
        labels = decode(maps)
        record: dict[str, Any] = {"predict_s": round(time.perf_counter() - start, 4)}
        if self.refiner is not None:
            labels, extra = self.refiner(sample.rgb, maps, labels)
            record.update(extra)
        return Labelled(labels, None, record)

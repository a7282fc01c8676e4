"""Instance masks a labeler keeps beside its label map (Grounded-SAM's SAM masks), saved as
``<id>.npz`` by ``generate --save-instances DIR`` and exported as true instances."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pseudolabel.core.errors import MaskError
from pseudolabel.core.files import atomic_write_bytes


@dataclass(frozen=True)
class Instances:
    """One image's instances.

    Attributes:
        masks: bool [N, H, W], possibly overlapping.
        class_ids: int [N] dataset class ids.
        scores: float [N] confidence (Grounded-SAM: box score x SAM's predicted IoU).
    """

    masks: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray


def resize_instances(instances: Instances, height: int, width: int) -> Instances:
    """``instances`` with masks at [H, W] (nearest neighbour), one mask at a time."""
    masks = np.zeros((len(instances.masks), height, width), bool)
    for index, mask in enumerate(instances.masks):
        masks[index] = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return Instances(masks, instances.class_ids, instances.scores)


def save_instances(path: str | os.PathLike[str], instances: Instances) -> None:
    """Write bit-packed masks, their shape, class ids and scores to an .npz, atomically."""
    buffer = io.BytesIO()
    masks = instances.masks.astype(bool)
    np.savez_compressed(
        buffer,
        masks=np.packbits(masks, axis=-1),
        shape=np.asarray(masks.shape, np.int64),
        class_ids=np.asarray(instances.class_ids, np.int32),
        scores=np.asarray(instances.scores, np.float32),
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_instances(path: str | os.PathLike[str]) -> Instances:
    """Read an .npz written by :func:`save_instances`."""
    try:
        with np.load(Path(path)) as data:
            count, height, width = (int(v) for v in data["shape"])
            masks = np.unpackbits(data["masks"], axis=-1, count=width).astype(bool).reshape(count, height, width)
            return Instances(masks, data["class_ids"].astype(int), data["scores"].astype(np.float32))
    except (OSError, KeyError, ValueError) as error:
        raise MaskError(f"cannot read instances {path}: {error}") from error

"""Ultralytics YOLO-seg folders: ``data.yaml`` (class names), ``labels/<split>/<id>.txt`` with one
polygon per line, rasterised as Ultralytics does (pixel coordinates truncated to integers, then
OpenCV's ``fillPoly``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import yaml

from pseudolabel.core.errors import ConfigError, SampleError
from pseudolabel.core.files import read_user_text
from pseudolabel.core.prompts import PromptSet
from pseudolabel.corrections.canvas import Canvas, Unreadable


def _class_ids(folder: Path, prompts: PromptSet) -> dict[int, int]:
    """YOLO class index -> class id, by the names in ``data.yaml``."""
    path = folder / "data.yaml"
    try:
        names = yaml.safe_load(read_user_text(path, "YOLO data.yaml"))["names"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise ConfigError(f"cannot read the class names of {path}: {error}") from error
    pairs = names.items() if isinstance(names, dict) else enumerate(names)
    return {int(index): prompts.class_id(str(name), f"{path}: class {index}: ") for index, name in pairs}


def polygon_mask(values: list[float], height: int, width: int) -> np.ndarray:
    """bool [H, W] of one normalised polygon (x1 y1 x2 y2 ...), as Ultralytics rasterises it."""
    points = (np.asarray(values, np.float64).reshape(-1, 2) * [width, height]).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


def read_yolo(
    folder: Path, prompts: PromptSet, image_size: Callable[[str], tuple[int, int]]
) -> Iterator[Canvas | Unreadable]:
    """One canvas per label file under ``folder/labels`` (every split folder; the id is the file's
    path under its split folder, without suffix).

    Args:
        image_size: id -> (height, width) of its image (YOLO files do not record it).
    """
    class_of = _class_ids(folder, prompts)
    labels = folder / "labels"
    if not labels.is_dir():
        raise ConfigError(f"{folder} has no labels/ folder (a YOLO-seg export has labels/<split>/<id>.txt)")
    for split in sorted(p for p in labels.iterdir() if p.is_dir()):
        for path in sorted(split.rglob("*.txt")):
            image_id = path.relative_to(split).with_suffix("").as_posix()
            try:
                canvas = Canvas(image_id, *image_size(image_id))
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                    values = line.split()
                    if not values:
                        continue
                    if len(values) < 7 or len(values) % 2 == 0:
                        raise ValueError(f"line {number} is not a class and a polygon of 3 or more points")
                    index = int(values[0])
                    if index not in class_of:
                        raise ValueError(f"line {number}: class {index} is not in data.yaml")
                    canvas.paint(
                        polygon_mask([float(v) for v in values[1:]], canvas.height, canvas.width), class_of[index]
                    )
            except (OSError, UnicodeDecodeError, ValueError, KeyError, SampleError) as error:
                yield Unreadable(image_id, f"{path}: {error}")
                continue
            yield canvas

"""Ultralytics YOLO-seg: ``images/<split>/``, ``labels/<split>/<name>.txt`` with one line per
region (class index from 0, then its polygon's x y pairs normalised to [0, 1], holes joined in by
zero-width cuts) and ``data.yaml`` with an absolute ``path``, ``train`` and ``val``."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from pseudolabel.core.components import Component, option
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.files import atomic_write_text, output_errors
from pseudolabel.core.safe_paths import id_path
from pseudolabel.export.item import ExportItem
from pseudolabel.export.polygons import region_polygons
from pseudolabel.export.regions import Region

if TYPE_CHECKING:
    from pseudolabel.datasets.base import Dataset
    from pseudolabel.export.run import ExportRequest

VAL = "val"
"""The folder of the validation split."""


@dataclass(frozen=True)
class YoloOptions:
    """The split folders: the exported split's name, and a second split of the dataset as ``val``."""

    split_name: str = option("train", "The split's folder name.")
    val_split: str | None = option(None, "Also export this split of the dataset as data.yaml's val.")
    val_masks: Path | None = option(None, "Masks of --val-split (default: --masks; e.g. the GT folder).")

    def __post_init__(self) -> None:
        if self.val_split is not None and self.split_name == VAL:
            raise ConfigError("--split-name val is the folder --val-split writes to: name the training split otherwise")


YOLO_SEG = Component(
    "exporter", "yolo-seg", "Ultralytics YOLO-seg folder: images, label files, data.yaml.",
    "pseudolabel.export.yolo_format:build", options=YoloOptions,
)  # fmt: skip
VAL_IS_TRAIN_NOTE = (
    "val points at the training images (no --val-split): Ultralytics' validation figures then "
    "measure agreement with these pseudo-labels, not accuracy"
)


def yolo_lines(regions: list[Region], height: int, width: int) -> list[str]:
    """Label-file lines: ``<class - 1> x1 y1 x2 y2 ...``, one per outer boundary of each region."""
    lines = []
    scale = np.array([width, height], dtype=np.float64)
    for region in regions:
        for polygon in region_polygons(region.mask):
            points = np.clip(polygon / scale, 0.0, 1.0)
            lines.append(" ".join([str(region.class_id - 1), *(f"{v:.6f}" for v in points.ravel())]))
    return lines


def data_yaml(folder: Path, class_names: list[str], train: str, val: str | None) -> str:
    """``data.yaml`` text: ``path`` is the export folder made absolute (Ultralytics resolves a
    relative one against the working directory), names indexed from 0; without a ``val`` split
    ``val`` is the training split, said in a comment."""
    layout = {
        "path": str(folder.resolve()),
        "train": f"images/{train}",
        "val": f"images/{val or train}",
        "names": dict(enumerate(class_names[1:])),
    }
    text = yaml.safe_dump(layout, sort_keys=False, allow_unicode=True)
    return text if val else f"# {VAL_IS_TRAIN_NOTE}\n{text}"


def place_image(source: Path, target: Path) -> None:
    """A hard link to the image where the file system allows one, else a copy."""
    with output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


class YoloWriter:
    """Writes each image and its label file into ``<out>/images|labels/<folder>/`` (the training
    split under ``train``'s name, the validation split under ``val``), then ``data.yaml`` with
    ``train`` and ``val`` (the training folder again when there is no validation split)."""

    def __init__(self, out: Path, class_names: list[str], train: str, val: str | None) -> None:
        self.out, self.class_names, self.train, self.val = out, class_names, train, val

    def add(self, item: ExportItem) -> None:
        folder = self.val if item.subset == VAL and self.val else self.train
        images, labels = self.out / "images" / folder, self.out / "labels" / folder
        place_image(item.image_path, id_path(images, item.image_id, item.image_path.suffix))
        lines = yolo_lines(item.regions, *item.label_map.shape)
        atomic_write_text(id_path(labels, item.image_id, ".txt"), "".join(f"{line}\n" for line in lines))

    def finish(self) -> None:
        atomic_write_text(self.out / "data.yaml", data_yaml(self.out, self.class_names, self.train, self.val))


def build(dataset: Dataset, request: ExportRequest, options: YoloOptions) -> YoloWriter:
    """The YOLO-seg writer: the split under ``options.split_name``, a val split under ``val``."""
    return YoloWriter(request.out, dataset.class_names, options.split_name, VAL if options.val_split else None)

"""CVAT "Segmentation mask 1.1": ``labelmap.txt``, ``ImageSets/Segmentation/default.txt``,
``SegmentationClass/<id>.png`` (RGB, each label's colour) and ``SegmentationObject/<id>.png``
(each region its own instance colour), the layout CVAT uploads as annotations (read there by
Datumaro's VOC importer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pseudolabel.core.components import Component
from pseudolabel.core.errors import SampleError
from pseudolabel.core.files import atomic_write_text
from pseudolabel.core.images import write_image
from pseudolabel.core.masks import IGNORE_INDEX, VOC_COLORMAP
from pseudolabel.core.safe_paths import id_path
from pseudolabel.export.item import ExportItem
from pseudolabel.export.label_studio import review_labels

if TYPE_CHECKING:
    from pseudolabel.datasets.base import Dataset
    from pseudolabel.export.run import ExportRequest

CVAT_MASK = Component(
    "exporter", "cvat-mask", 'CVAT "Segmentation mask 1.1" folder to upload as annotations.',
    "pseudolabel.export.cvat_mask:build",
)  # fmt: skip
SUBSET = "default"
MAX_INSTANCES = 254
"""Instance colours of the VOC instance palette (0 is no instance; 255 is not used)."""


def labelmap_text(class_names: list[str]) -> str:
    """``labelmap.txt``: ``name:r,g,b::`` per class in the VOC palette, unsure last in 255's colour."""
    rows = ["# label:color_rgb:parts:actions"]
    ids = [*range(len(class_names)), IGNORE_INDEX]
    for name, class_id in zip([class_names[0], *review_labels(class_names)], ids, strict=True):
        rows.append(f"{name}:{','.join(str(int(v)) for v in VOC_COLORMAP[class_id])}::")
    return "\n".join(rows) + "\n"


class CvatMaskWriter:
    """Writes each image's class and instance PNGs, then ``labelmap.txt`` and the image list."""

    def __init__(self, out: Path, class_names: list[str]) -> None:
        self.out, self.class_names = out, class_names
        review_labels(class_names)  # refuses a class named like the unsure label
        self.ids: list[str] = []

    def add(self, item: ExportItem) -> None:
        unsure = item.label_map == IGNORE_INDEX
        if len(item.regions) + unsure.any() > MAX_INSTANCES:
            raise SampleError(f"{len(item.regions)} regions: CVAT's instance masks hold at most {MAX_INSTANCES}")
        instances = np.zeros(item.label_map.shape, np.uint8)
        for index, region in enumerate(item.regions, start=1):
            instances[region.mask] = index
        instances[unsure] = len(item.regions) + 1  # the unsure pixels: one instance of the unsure label
        write_image(id_path(self.out / "SegmentationClass", item.image_id, ".png"), VOC_COLORMAP[item.label_map])
        write_image(id_path(self.out / "SegmentationObject", item.image_id, ".png"), VOC_COLORMAP[instances])
        self.ids.append(item.image_id)

    def finish(self) -> None:
        atomic_write_text(self.out / "labelmap.txt", labelmap_text(self.class_names))
        listing = "".join(f"{image_id}\n" for image_id in self.ids)
        atomic_write_text(self.out / "ImageSets" / "Segmentation" / f"{SUBSET}.txt", listing)


def build(dataset: Dataset, request: ExportRequest, options: None) -> CvatMaskWriter:
    """The CVAT mask writer."""
    return CvatMaskWriter(request.out, dataset.class_names)

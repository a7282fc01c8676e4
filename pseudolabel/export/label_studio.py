"""Label Studio: ``tasks.json`` (one task per image, its masks as pre-annotations: one brush
result per class, plus one for the unsure pixels) and ``labeling-config.xml`` to create the
project with, so a person reviews and corrects the pseudo-labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from xml.etree import ElementTree

import numpy as np

from pseudolabel.core.components import Component, option
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.files import atomic_write_text
from pseudolabel.core.masks import IGNORE_INDEX, VOC_COLORMAP
from pseudolabel.export import brush_rle
from pseudolabel.export.item import ExportItem

if TYPE_CHECKING:
    from pseudolabel.datasets.base import Dataset
    from pseudolabel.export.run import ExportRequest

UNSURE_LABEL = "unsure"
"""The label the 255 pixels carry in Label Studio and CVAT, so a reviewer sees and settles them."""
BRUSH_TAG, POLYGON_TAG, IMAGE_TAG = "label", "polygon", "image"
DEFAULT_IMAGE_PREFIX = "/data/local-files/?d="
"""Label Studio's local-files URL: serve the dataset's image folder as its document root."""
MODEL_VERSION = "pseudolabel"


@dataclass(frozen=True)
class LabelStudioOptions:
    """How tasks point at their images."""

    image_prefix: str = option(
        DEFAULT_IMAGE_PREFIX,
        "URL prefix or local folder the task's image path (under the image folder) is appended to.",
    )


LABEL_STUDIO = Component(
    "exporter", "label-studio", "Label Studio tasks with brush pre-annotations, and the labeling config.",
    "pseudolabel.export.label_studio:build", options=LabelStudioOptions,
)  # fmt: skip


def review_labels(class_names: list[str]) -> list[str]:
    """The label names a reviewer gets: the classes but background, then :data:`UNSURE_LABEL`."""
    if UNSURE_LABEL in class_names:
        raise ConfigError(f"a class is named {UNSURE_LABEL!r}, the name the unsure pixels get in review tools")
    return [*class_names[1:], UNSURE_LABEL]


def label_colour(class_id: int) -> str:
    """``#rrggbb`` of a class id (255: unsure) in the VOC palette."""
    return "#" + "".join(f"{int(v):02x}" for v in VOC_COLORMAP[class_id])


def labeling_config(class_names: list[str]) -> str:
    """The project's labeling config: the image, brush labels (the pre-annotations) and polygon
    labels with the same names (corrections may use either)."""
    view = ElementTree.Element("View")
    ElementTree.SubElement(view, "Image", name=IMAGE_TAG, value=f"${IMAGE_TAG}", zoom="true")
    ids = [*range(1, len(class_names)), IGNORE_INDEX]
    for tag, name in (("BrushLabels", BRUSH_TAG), ("PolygonLabels", POLYGON_TAG)):
        control = ElementTree.SubElement(view, tag, name=name, toName=IMAGE_TAG)
        for label, class_id in zip(review_labels(class_names), ids, strict=True):
            ElementTree.SubElement(control, "Label", value=label, background=label_colour(class_id))
    ElementTree.indent(view)
    return ElementTree.tostring(view, encoding="unicode") + "\n"


def image_location(prefix: str, file_name: str) -> str:
    """The task's image: ``prefix`` + the URL-quoted path for a URL prefix (it holds ``://`` or
    ``?``), else the path joined to a local folder."""
    if "://" in prefix or "?" in prefix:
        return prefix + quote(file_name)
    return str(Path(prefix) / file_name)


def brush_result(mask: np.ndarray, label: str, score: float | None) -> dict[str, Any]:
    """One brush pre-annotation of bool [H, W] ``mask``."""
    height, width = mask.shape
    result = {
        "from_name": BRUSH_TAG,
        "to_name": IMAGE_TAG,
        "type": "brushlabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": brush_rle.encode(mask.astype(np.uint8) * 255), "brushlabels": [label]},
    }
    if score is not None:
        result["score"] = score
    return result


class LabelStudioWriter:
    """Collects one task per image and writes ``tasks.json`` and ``labeling-config.xml``."""

    def __init__(self, out: Path, class_names: list[str], image_prefix: str) -> None:
        self.out, self.class_names, self.image_prefix = out, class_names, image_prefix
        self.labels = review_labels(class_names)
        self.tasks: list[dict[str, Any]] = []

    def add(self, item: ExportItem) -> None:
        results = []
        for class_id in np.unique(item.label_map):
            if class_id == 0:
                continue
            mask = item.label_map == class_id
            label = self.labels[-1] if class_id == IGNORE_INDEX else self.class_names[class_id]
            scores = [r.score for r in item.regions if r.class_id == class_id and r.score is not None]
            results.append(brush_result(mask, label, round(float(np.mean(scores)), 6) if scores else None))
        region_scores = [r.score for r in item.regions if r.score is not None]
        prediction = {"model_version": MODEL_VERSION, "result": results}
        if region_scores:
            prediction["score"] = round(float(np.mean(region_scores)), 6)
        data = {IMAGE_TAG: image_location(self.image_prefix, item.file_name), "pseudolabel_id": item.image_id}
        self.tasks.append({"data": data, "predictions": [prediction]})

    def finish(self) -> None:
        atomic_write_text(self.out / "labeling-config.xml", labeling_config(self.class_names))
        atomic_write_text(self.out / "tasks.json", json.dumps(self.tasks))


def build(dataset: Dataset, request: ExportRequest, options: LabelStudioOptions) -> LabelStudioWriter:
    """The Label Studio writer, images located by ``options.image_prefix``."""
    return LabelStudioWriter(request.out, dataset.class_names, options.image_prefix)

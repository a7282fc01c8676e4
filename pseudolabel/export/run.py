"""Export a folder of label maps (``<id>.png``, any tool's) for a dataset split."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from pseudolabel.datasets.base import Dataset
from pseudolabel.errors import ConfigError, SampleError
from pseudolabel.export.coco_format import COCO_FORMATS, annotation, categories, category_ids
from pseudolabel.export.regions import INSTANCE_MODES, Region, instance_regions, label_regions
from pseudolabel.export.yolo_format import data_yaml, yolo_lines
from pseudolabel.files import atomic_write_text, output_errors
from pseudolabel.images import write_image
from pseudolabel.instances import load_instances
from pseudolabel.masks import mask_class_ids, read_mask
from pseudolabel.safe_paths import id_path, resolve_inside

EXPORT_FORMATS = (*COCO_FORMATS, "yolo-seg", "cityscapes-ids")


@dataclass
class ExportSummary:
    """What an export wrote: images, regions, the images skipped (id, why) and the output path."""

    path: Path
    images: int = 0
    regions: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _label_map(dataset: Dataset, masks_dir: Path, image_id: str) -> tuple[np.ndarray, Path]:
    """The image's mask, checked against its image's size and the class count, and the image path."""
    mask_path = id_path(masks_dir, image_id, ".png")
    if not mask_path.is_file():
        raise SampleError(f"no mask {mask_path}")
    label_map = read_mask(mask_path)
    mask_class_ids(label_map, dataset.num_classes, mask_path)
    image_path = resolve_inside(dataset.image_root, dataset.image_path(image_id), f"image of {image_id!r}:")
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except OSError as error:
        raise SampleError(f"cannot read image {image_path}: {error}") from error
    if label_map.shape != (height, width):
        raise SampleError(f"mask {mask_path} is {label_map.shape[::-1]} but its image is {(width, height)}")
    return label_map, image_path


def _regions(label_map: np.ndarray, instances: str, instances_dir: Path | None, image_id: str) -> list[Region]:
    """The label map's regions, or the image's saved instances (checked against its size)."""
    if instances_dir is None:
        return label_regions(label_map, instances)
    path = id_path(instances_dir, image_id, ".npz")
    if not path.is_file():
        raise SampleError(f"no instances {path}")
    saved = load_instances(path)
    if saved.masks.shape[1:] != label_map.shape:
        raise SampleError(f"instances {path} are {saved.masks.shape[1:]} but the mask is {label_map.shape}")
    return instance_regions(saved.masks, saved.class_ids, saved.scores)


def _place_image(source: Path, target: Path) -> None:
    """A hard link to the image where the file system allows one, else a copy."""
    with output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def _write_file_formats(
    fmt: str, out: Path, split: str, image_id: str, image_path: Path, label_map: np.ndarray, regions: list[Region]
) -> None:
    """One image's files: YOLO-seg image and label file, or an id PNG."""
    if fmt == "yolo-seg":
        _place_image(image_path, id_path(out / "images" / split, image_id, image_path.suffix))
        lines = yolo_lines(regions, *label_map.shape)
        atomic_write_text(id_path(out / "labels" / split, image_id, ".txt"), "".join(f"{line}\n" for line in lines))
        return
    write_image(id_path(out, image_id, ".png"), label_map)


def export_masks(
    dataset: Dataset,
    masks_dir: Path,
    fmt: str,
    out: Path,
    instances: str = "regions",
    split_name: str = "train",
    on_progress: Callable[[], None] | None = None,
    instances_dir: Path | None = None,
) -> ExportSummary:
    """Write the split's masks in ``fmt`` to ``out`` (a JSON file for COCO, else a folder).

    With ``instances_dir`` (``generate --save-instances``) the annotations are the labeler's own
    instances, each with its score, instead of regions of the label map. Images without a usable
    mask are skipped and listed; 255 pixels never become a class.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}")
    if instances not in INSTANCE_MODES:
        raise ConfigError(f"--instances must be one of {', '.join(INSTANCE_MODES)}")
    summary = ExportSummary(out)
    coco: dict[str, list[Any]] = {"images": [], "annotations": []}
    ids = category_ids(dataset.prompts)
    for image_id in dataset.ids():
        try:
            label_map, image_path = _label_map(dataset, masks_dir, image_id)
            regions = _regions(label_map, instances, instances_dir, image_id)
        except SampleError as error:
            summary.skipped.append((image_id, str(error)))
            continue
        height, width = label_map.shape
        if fmt in COCO_FORMATS:
            number = len(coco["images"]) + 1
            file_name = os.path.relpath(image_path, os.path.realpath(dataset.image_root))
            coco["images"].append({"id": number, "file_name": file_name, "width": width, "height": height})
            for region in regions:
                entry = annotation(region, number, len(coco["annotations"]) + 1, ids[region.class_id], fmt)
                if entry is not None:
                    coco["annotations"].append(entry)
        else:
            _write_file_formats(fmt, out, split_name, image_id, image_path, label_map, regions)
        summary.images += 1
        summary.regions += len(regions)
        if on_progress:
            on_progress()
    if fmt in COCO_FORMATS:
        document = {"info": {"description": f"pseudolabel export of {masks_dir}"}, **coco,
                    "categories": categories(dataset.prompts)}  # fmt: skip
        atomic_write_text(out, json.dumps(document))
    elif fmt == "yolo-seg":
        atomic_write_text(
            out / "data.yaml", yaml.safe_dump(data_yaml(dataset.class_names, split_name), sort_keys=False)
        )
    return summary

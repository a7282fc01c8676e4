"""Export a folder of label maps (``<id>.png``, any tool's) for a dataset split."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pseudolabel.core.components import component
from pseudolabel.core.errors import ConfigError, MaskError, SampleError
from pseudolabel.core.instances import load_instances
from pseudolabel.core.masks import mask_class_ids, read_mask
from pseudolabel.core.safe_paths import id_path, resolve_inside
from pseudolabel.core.scoremaps import ScoreMaps, load_scores
from pseudolabel.datasets.base import Dataset
from pseudolabel.export.item import ExportItem, ExportWriter
from pseudolabel.export.regions import INSTANCE_MODES, Region, instance_regions, label_regions, scored


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how.

    Attributes:
        masks: folder of ``<id>.png`` label maps.
        fmt: a registered exporter's name (``--format``).
        out: the JSON file (COCO) or the folder (the others).
        instances: one of :data:`INSTANCE_MODES`.
        instances_dir: ``generate --save-instances`` folder: export those instances instead.
        scores_dir: ``generate --save-scores`` folder: each region's score is its mean there.
        options: the exporter's declared options (None: its defaults).
    """

    masks: Path
    fmt: str
    out: Path
    instances: str = "regions"
    instances_dir: Path | None = None
    scores_dir: Path | None = None
    options: Any = None


@dataclass
class ExportSummary:
    """What an export wrote: images, regions, the images skipped (id, why) and the output path."""

    path: Path
    images: int = 0
    regions: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def open_writer(dataset: Dataset, request: ExportRequest) -> ExportWriter:
    """The writer of ``request.fmt``, from the exporter registry with its options."""
    declared = component("exporter", request.fmt)
    return declared.load()(dataset, request, request.options if request.options is not None else declared.defaults())


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


def _regions(label_map: np.ndarray, request: ExportRequest, image_id: str) -> list[Region]:
    """The label map's regions, or the image's saved instances (checked against its size), scored."""
    if request.instances_dir is None:
        regions = label_regions(label_map, request.instances)
    else:
        path = id_path(request.instances_dir, image_id, ".npz")
        if not path.is_file():
            raise SampleError(f"no instances {path}")
        saved = load_instances(path)
        if saved.masks.shape[1:] != label_map.shape:
            raise SampleError(f"instances {path} are {saved.masks.shape[1:]} but the mask is {label_map.shape}")
        regions = instance_regions(saved.masks, saved.class_ids, saved.scores)
    return scored(regions, _score_maps(request.scores_dir, image_id, label_map.shape))


def _score_maps(scores_dir: Path | None, image_id: str, shape: tuple[int, int]) -> ScoreMaps | None:
    """The image's saved score maps (None without a folder), checked against the mask's size."""
    if scores_dir is None:
        return None
    path = id_path(scores_dir, image_id, ".npz")
    if not path.is_file():
        raise SampleError(f"no scores {path}")
    try:
        maps = load_scores(path)
    except MaskError as error:
        raise SampleError(str(error)) from error
    if maps.scores.shape[1:] != shape:
        raise SampleError(f"scores {path} are {maps.scores.shape[1:]} but the mask is {shape}")
    return maps


def export_split(
    dataset: Dataset,
    request: ExportRequest,
    writer: ExportWriter,
    subset: str,
    on_progress: Callable[[], None] | None = None,
) -> ExportSummary:
    """Add the split's images to ``writer`` (filed under ``subset``); images without a usable
    mask are skipped and listed. 255 pixels never become a class."""
    summary = ExportSummary(request.out)
    numbers = dataset.numeric_ids()
    for image_id in dataset.ids():
        try:
            label_map, image_path = _label_map(dataset, request.masks, image_id)
            regions = _regions(label_map, request, image_id)
            file_name = Path(os.path.relpath(image_path, os.path.realpath(dataset.image_root))).as_posix()
            writer.add(ExportItem(image_id, numbers[image_id], image_path, file_name, label_map, regions, subset))
        except SampleError as error:
            summary.skipped.append((image_id, str(error)))
            continue
        summary.images += 1
        summary.regions += len(regions)
        if on_progress:
            on_progress()
    return summary


@dataclass(frozen=True)
class ValSplit:
    """YOLO-seg: a second split exported beside the first as its ``val``, with its own masks."""

    dataset: Dataset
    masks: Path


def export_masks(
    dataset: Dataset,
    request: ExportRequest,
    on_progress: Callable[[], None] | None = None,
    val: ValSplit | None = None,
) -> ExportSummary:
    """Write the split's masks (and ``val``'s, YOLO-seg only) in ``request.fmt`` to ``request.out``."""
    if request.instances not in INSTANCE_MODES:
        raise ConfigError(f"--instances must be one of {', '.join(INSTANCE_MODES)}")
    if val is not None and request.fmt != "yolo-seg":
        raise ConfigError("--val-split is for --format yolo-seg")
    writer = open_writer(dataset, request)
    summary = export_split(dataset, request, writer, "train", on_progress)
    if val is not None:
        val_request = replace(request, masks=val.masks)
        extra = export_split(val.dataset, val_request, writer, "val", on_progress)
        summary.images += extra.images
        summary.regions += extra.regions
        summary.skipped += [(f"val/{image_id}", why) for image_id, why in extra.skipped]
    writer.finish()
    return summary

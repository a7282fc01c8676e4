"""``pseudolabel import``: read corrected annotations in one format and write ``<id>.png`` label
maps (VOC palette, 255 unsure) for the dataset's images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pseudolabel.core.errors import ConfigError, SampleError
from pseudolabel.core.masks import write_mask
from pseudolabel.core.safe_paths import id_path, resolve_inside
from pseudolabel.corrections.canvas import Canvas, Unreadable
from pseudolabel.corrections.coco_reader import read_coco
from pseudolabel.corrections.cvat_reader import read_cvat
from pseudolabel.corrections.label_studio_reader import read_label_studio
from pseudolabel.corrections.yolo_reader import read_yolo
from pseudolabel.datasets.base import Dataset

IMPORT_FORMATS = ("label-studio", "coco", "yolo-seg", "cvat-mask")


@dataclass
class ImportSummary:
    """What an import wrote: the ids written, and the images left out (id, why)."""

    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def image_sizes(dataset: Dataset) -> Callable[[str], tuple[int, int]]:
    """id -> (height, width) of the dataset's image; an id the split lacks, or an image that
    cannot be opened, is a SampleError."""
    known = set(dataset.ids())

    def size(image_id: str) -> tuple[int, int]:
        if image_id not in known:
            raise SampleError(f"{image_id!r} is not an image of the split")
        path = resolve_inside(dataset.image_root, dataset.image_path(image_id), f"image of {image_id!r}:")
        try:
            with Image.open(path) as image:
                return image.height, image.width
        except OSError as error:
            raise SampleError(f"cannot read image {path}: {error}") from error

    return size


def read_corrections(fmt: str, source: Path, dataset: Dataset) -> Iterator[Canvas | Unreadable]:
    """The canvases of ``source`` in ``fmt``."""
    if fmt not in IMPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(IMPORT_FORMATS)}")
    if not source.exists():
        raise ConfigError(f"{source} does not exist")
    if fmt == "label-studio":
        return read_label_studio(source, dataset.prompts)
    if fmt == "coco":
        return read_coco(source, dataset.prompts)
    if fmt == "yolo-seg":
        return read_yolo(source, dataset.prompts, image_sizes(dataset))
    return read_cvat(source, dataset.prompts)


def import_corrections(
    fmt: str, source: Path, dataset: Dataset, out: Path, on_progress: Callable[[], None] | None = None
) -> ImportSummary:
    """Write each annotated image of the split as ``out/<id>.png``. An image the split lacks, or
    whose annotations were made at another size than its image, is skipped and listed."""
    summary = ImportSummary()
    size = image_sizes(dataset)
    for canvas in read_corrections(fmt, source, dataset):
        if on_progress:
            on_progress()
        if isinstance(canvas, Unreadable):
            summary.skipped.append((canvas.image_id, canvas.why))
            continue
        try:
            expected = size(canvas.image_id)
        except SampleError as error:
            summary.skipped.append((canvas.image_id, str(error)))
            continue
        if expected != canvas.labels.shape:
            why = f"annotated at {canvas.width}x{canvas.height}, its image is {expected[1]}x{expected[0]}"
            summary.skipped.append((canvas.image_id, why))
            continue
        write_mask(id_path(out, canvas.image_id, ".png"), canvas.labels)
        summary.written.append(canvas.image_id)
    return summary

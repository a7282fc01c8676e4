"""``pseudolabel export``: label maps as COCO (RLE or polygons), YOLO-seg or id PNGs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pseudolabel.cli.app import app, console, err_console, progress_bar, remember_output_folder
from pseudolabel.cli.options import (
    DATA,
    RUN,
    ClassesOption,
    ConfigOption,
    DatasetArgs,
    DatasetOption,
    LabelsOption,
    MaxPixelsOption,
    PromptsOption,
    RootOption,
    SplitOption,
)
from pseudolabel.config import write_resolved_config
from pseudolabel.errors import ConfigError
from pseudolabel.images import DEFAULT_MAX_IMAGE_PIXELS


class ExportFormat(str, Enum):
    """Export formats."""

    coco_rle = "coco-rle"
    coco_polygon = "coco-polygon"
    yolo_seg = "yolo-seg"
    cityscapes_ids = "cityscapes-ids"


class Instances(str, Enum):
    """How a class's pixels become annotations."""

    regions = "regions"
    none = "none"


@app.command()
def export(
    ctx: typer.Context,
    dataset: DatasetOption,
    masks: Annotated[Path, typer.Option(help="Masks to export, <id>.png, from any tool.", rich_help_panel=DATA)],
    out: Annotated[Path, typer.Option(help="COCO: the .json file; others: a folder.", rich_help_panel=DATA)],
    format: Annotated[ExportFormat, typer.Option("--format", help="Output format.", rich_help_panel=DATA)],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    instances: Annotated[
        Instances, typer.Option(help="regions: one per connected region; none: one per class.", rich_help_panel=RUN)
    ] = Instances.regions,
    split_name: Annotated[str, typer.Option(help="YOLO-seg: the split folder name.", rich_help_panel=RUN)] = "train",
    instances_dir: Annotated[
        Path | None,
        typer.Option(help="Export the instances of generate --save-instances DIR.", rich_help_panel=RUN),
    ] = None,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    config: ConfigOption = None,
) -> None:
    """Export masks for other tools: COCO RLE or polygons, Ultralytics YOLO-seg, or id PNGs."""
    from pseudolabel.export.run import export_masks

    coco = format in (ExportFormat.coco_rle, ExportFormat.coco_polygon)
    if coco and out.suffix.lower() != ".json":
        raise ConfigError(f"--format {format.value} writes one JSON file: give --out a .json path, got {out}")
    if not masks.is_dir():
        raise ConfigError(f"mask folder {masks} does not exist")
    folder = out.parent if coco else out
    remember_output_folder(folder)
    source = DatasetArgs(dataset, root, split, labels, prompts, classes, max_image_pixels).open()
    with progress_bar() as progress:
        task = progress.add_task("export", total=len(source.ids()))
        summary = export_masks(
            source, masks, format.value, out, instances.value, split_name, lambda: progress.advance(task), instances_dir
        )
    write_resolved_config(folder / f"{out.stem if coco else 'export'}.config.yaml", ctx)
    for image_id, why in summary.skipped:
        err_console.print(f"[yellow]skipped[/] {escape(image_id)}: {escape(why)}", highlight=False, soft_wrap=True)
    console.print(
        f"{summary.images} images, {summary.regions} regions exported as {format.value} to {escape(str(out))}"
        + (f"; {len(summary.skipped)} skipped (listed above)" if summary.skipped else ""),
        highlight=False,
        soft_wrap=True,
    )

"""``pseudolabel export``: label maps as COCO (RLE or polygons), YOLO-seg, Label Studio tasks, CVAT
masks or id PNGs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pseudolabel.cli.app import app, console, progress_bar, remember_output_folder, report_skipped
from pseudolabel.cli.components import (
    choices,
    component_options,
    names,
    refuse_other_components_options,
    with_component_options,
)
from pseudolabel.cli.config_file import write_resolved_config
from pseudolabel.cli.options import (
    DATA,
    RUN,
    ClassesOption,
    ConfigOption,
    DatasetOption,
    LabelsOption,
    MaxPixelsOption,
    PromptsOption,
    RootOption,
    SplitOption,
    open_dataset,
)
from pseudolabel.core.components import component
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS

ExportFormat = choices("exporter", "ExportFormat")
"""The registered export formats ``--format`` takes."""


class Instances(str, Enum):
    """How a class's pixels become annotations."""

    regions = "regions"
    none = "none"


@app.command()
@with_component_options("exporter")
def export(
    ctx: typer.Context,
    dataset: DatasetOption,
    masks: Annotated[Path, typer.Option(help="Masks to export, <id>.png, from any tool.", rich_help_panel=DATA)],
    out: Annotated[Path, typer.Option(help="COCO: the .json file; the others: a folder.", rich_help_panel=DATA)],
    format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            metavar="<format>",
            help=f"{names('exporter')}.",
            rich_help_panel=DATA,
        ),
    ],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    instances: Annotated[
        Instances, typer.Option(help="regions: one per connected region; none: one per class.", rich_help_panel=RUN)
    ] = Instances.regions,
    instances_dir: Annotated[
        Path | None,
        typer.Option(help="Export the instances of generate --save-instances DIR.", rich_help_panel=RUN),
    ] = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            help="generate --save-scores DIR: each region's score is its mean there (else 1).", rich_help_panel=RUN
        ),
    ] = None,
    ids: Annotated[
        Path | None,
        typer.Option(
            help="Export only the ids in this file, one per line (e.g. report's review list).", rich_help_panel=DATA
        ),
    ] = None,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    config: ConfigOption = None,
) -> None:
    """Export masks for other tools: COCO RLE or polygons, Ultralytics YOLO-seg, Label Studio tasks,
    CVAT segmentation masks, or id PNGs."""
    from pseudolabel.core.id_lists import read_id_list
    from pseudolabel.datasets.base import OnlyIds
    from pseudolabel.export.run import ExportRequest, ValSplit, export_masks
    from pseudolabel.export.yolo_format import VAL_IS_TRAIN_NOTE

    declared = component("exporter", format.value)
    one_file = declared.output_suffix is not None
    if one_file and out.suffix.lower() != declared.output_suffix:
        raise ConfigError(
            f"--format {format.value} writes one {declared.output_suffix} file: give --out a "
            f"{declared.output_suffix} path, got {out}"
        )
    refuse_other_components_options(ctx, "exporter", format.value)
    options = component_options("exporter", format.value, dict(ctx.params)).get(format.value)
    val_split, val_masks = getattr(options, "val_split", None), getattr(options, "val_masks", None)
    for folder_option, name in ((masks, "mask"), (val_masks, "--val-masks"), (scores, "--scores")):
        if folder_option is not None and not folder_option.is_dir():
            raise ConfigError(f"{name} folder {folder_option} does not exist")
    request = ExportRequest(masks, format.value, out, instances.value, instances_dir, scores, options)
    folder = out.parent if one_file else out
    remember_output_folder(folder)
    source = open_dataset(ctx.params)
    if ids is not None:
        source = OnlyIds(source, read_id_list(ids))
    val = None
    if val_split is not None:
        val_source = open_dataset(ctx.params, val_split)
        val = ValSplit(val_source, val_masks or masks)
    with progress_bar() as progress:
        total = len(source.ids()) + (len(val.dataset.ids()) if val else 0)
        task = progress.add_task("export", total=total)
        summary = export_masks(source, request, lambda: progress.advance(task), val)
    write_resolved_config(folder / f"{out.stem if one_file else 'export'}.config.yaml", ctx)
    report_skipped(
        summary.skipped, f"{summary.images} images, {summary.regions} regions exported as {format.value} to {out}"
    )
    if format.value == "yolo-seg" and val is None:
        console.print(f"[yellow]note[/]: {VAL_IS_TRAIN_NOTE} (data.yaml says so too)", highlight=False)

"""``pseudolabel import``: corrected annotations (Label Studio, CVAT, COCO, YOLO-seg) back to PNGs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pseudolabel.cli.app import app, progress_bar, remember_output_folder, report_skipped
from pseudolabel.cli.config_file import write_resolved_config
from pseudolabel.cli.options import (
    DATA,
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
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS


class ImportFormat(str, Enum):
    """Formats ``import`` reads."""

    label_studio = "label-studio"
    coco = "coco"
    yolo_seg = "yolo-seg"
    cvat_mask = "cvat-mask"


@app.command("import")
def import_corrections(
    ctx: typer.Context,
    dataset: DatasetOption,
    source: Annotated[
        Path,
        typer.Option(
            "--from",
            help="Label Studio JSON export, COCO .json, YOLO-seg folder, or CVAT mask folder or .zip.",
            rich_help_panel=DATA,
        ),
    ],
    format: Annotated[ImportFormat, typer.Option("--format", help="Format of --from.", rich_help_panel=DATA)],
    out: Annotated[Path, typer.Option(help="Folder for <id>.png label maps (VOC palette).", rich_help_panel=DATA)],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    config: ConfigOption = None,
) -> None:
    """Read corrected annotations back into label maps that score, report and train-seg take.

    Pixels no annotation covers are background; pixels two classes claim, crowd regions and the
    'unsure' label become 255.
    """
    from pseudolabel.corrections.run import import_corrections as run_import

    remember_output_folder(out)
    source_dataset = open_dataset(ctx.params)
    with progress_bar() as progress:
        task = progress.add_task("import", total=None)
        summary = run_import(format.value, source, source_dataset, out, lambda: progress.advance(task))
    write_resolved_config(out / "import.config.yaml", ctx)
    report_skipped(summary.skipped, f"{len(summary.written)} label maps written to {out} from {format.value}")

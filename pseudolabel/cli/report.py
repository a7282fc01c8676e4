"""``pseudolabel report``: one self-contained HTML page comparing prediction folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pseudolabel.cli.app import app, console, remember_output_folder
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
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS


@app.command()
def report(
    ctx: typer.Context,
    pred: Annotated[
        list[Path], typer.Option(help="Prediction folder(s) <id>.png; repeat to compare.", rich_help_panel=DATA)
    ],
    dataset: DatasetOption,
    out: Annotated[Path, typer.Option(help="Report folder: index.html and thumbs/.", rich_help_panel=DATA)],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    worst: Annotated[
        int,
        typer.Option(
            help="Thumbnails and review.txt: the N lowest-mIoU images (no GT: most unsure).", rich_help_panel=RUN
        ),
    ] = 12,
    ids: Annotated[
        Path | None,
        typer.Option(
            help="Report only the ids in this file, one per line (e.g. an earlier review.txt).", rich_help_panel=DATA
        ),
    ] = None,
    allow_missing: Annotated[
        bool, typer.Option(help="Missing predictions count as all-unsure.", rich_help_panel=RUN)
    ] = False,
    workers: Annotated[int, typer.Option(help="Scoring processes; 0 = all CPU cores.", rich_help_panel=RUN)] = 0,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    config: ConfigOption = None,
) -> None:
    """Write an HTML report of prediction folders: scores, per-class IoU, confusion, worst images, runs."""
    remember_output_folder(out)
    source = open_dataset(ctx.params)
    from pseudolabel.core.id_lists import read_id_list
    from pseudolabel.datasets.base import OnlyIds
    from pseudolabel.report.build import REVIEW_LIST, build_report

    if ids is not None:
        source = OnlyIds(source, read_id_list(ids))
    page = build_report(source, pred, out, worst, allow_missing, workers)
    write_resolved_config(out / "config.yaml", ctx)
    console.print(f"report: {escape(str(page))}", highlight=False, soft_wrap=True)
    console.print(f"review first: {escape(str(out / REVIEW_LIST))}", highlight=False, soft_wrap=True)

"""``pseudolabel overlay``: one picture per image of any tool's masks over the images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pseudolabel.cli.app import app, remember_output_folder
from pseudolabel.cli.config_file import write_run_config
from pseudolabel.cli.options import (
    DATA,
    RUN,
    ClassesOption,
    ConfigOption,
    DatasetOption,
    LabelsOption,
    LimitOption,
    MaxPixelsOption,
    OverwriteOption,
    PromptsOption,
    RootOption,
    ShardOption,
    SplitOption,
    open_dataset,
)
from pseudolabel.cli.running import run_with_progress
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS


@app.command()
def overlay(
    ctx: typer.Context,
    dataset: DatasetOption,
    masks: Annotated[Path, typer.Option(help="Masks to show, <id>.png, from any tool.", rich_help_panel=DATA)],
    out: Annotated[Path, typer.Option(help="Output: one <id>.png picture per image.", rich_help_panel=DATA)],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    gt: Annotated[
        bool, typer.Option(help="Add GT and error panels where a GT mask exists.", rich_help_panel=DATA)
    ] = True,
    max_side: Annotated[int, typer.Option(help="Longer side of each panel, in pixels.", rich_help_panel=RUN)] = 512,
    limit: LimitOption = None,
    shard: ShardOption = "0/1",
    overwrite: OverwriteOption = False,
    num_workers: Annotated[
        int | None, typer.Option(help="Processes (default: all cores).", rich_help_panel=RUN)
    ] = None,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    config: ConfigOption = None,
) -> None:
    """Draw each image's mask over it (and its GT and errors): image | mask | GT | errors."""
    remember_output_folder(out)
    from pseudolabel.runner.loop import RunOptions
    from pseudolabel.runner.per_image import OverlayPicture
    from pseudolabel.runner.torchrun import run_shard

    if not masks.is_dir():
        raise ConfigError(f"mask folder {masks} does not exist")
    if max_side < 16:
        raise ConfigError(f"--max-side must be at least 16 pixels, got {max_side}")
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    run = RunOptions(out, None, overwrite, limit, run_shard(shard), workers, label_in_workers=True)
    source = open_dataset(ctx.params)
    if gt:
        source.prepare_gt()
    picture = OverlayPicture(masks, source.class_names, gt, max_side)
    write_run_config(out, ctx, overwrite)
    run_with_progress("overlay", source, lambda: picture, run, out)

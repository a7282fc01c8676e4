"""``pseudolabel score`` and ``pseudolabel inspect``: figures against ground truth, dataset summaries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pseudolabel.cli.app import app, console, err_console, progress_bar, remember_output_folder
from pseudolabel.cli.config_file import write_resolved_config
from pseudolabel.cli.options import (
    DATA,
    ClassesOption,
    ConfigOption,
    DatasetArgs,
    DatasetName,
    DatasetOption,
    LabelsOption,
    MaxPixelsOption,
    PromptsOption,
    RootOption,
    SplitOption,
    open_dataset,
)  # fmt: skip
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS


@app.command()
def score(
    ctx: typer.Context,
    pred: Annotated[
        Path, typer.Option(help="Folder of predicted masks, <id>.png (palette, grey or RGB).", rich_help_panel=DATA)
    ],
    gt: Annotated[
        Path | None, typer.Option(help="Folder of GT masks; every GT mask in it is scored.", rich_help_panel=DATA)
    ] = None,
    dataset: Annotated[
        DatasetName | None, typer.Option(help="Score a dataset split's GT instead of --gt.", rich_help_panel=DATA)
    ] = None,
    root: RootOption = None,
    split: SplitOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    num_classes: Annotated[
        int | None,
        typer.Option(
            help="Number of classes incl. background (default: the prompt set's, 21 for VOC).", rich_help_panel=DATA
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write all figures as JSON here.", rich_help_panel="Output")
    ] = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write per-class figures as CSV here.", rich_help_panel="Output")
    ] = None,
    per_image: Annotated[
        Path | None,
        typer.Option(help="Write per-image figures as CSV here (and into --json).", rich_help_panel="Output"),
    ] = None,
    worst: Annotated[int, typer.Option(help="Print the N images of lowest mIoU.", rich_help_panel="Output")] = 0,
    allow_missing: Annotated[
        bool, typer.Option(help="Missing predictions count as all-unsure.", rich_help_panel="Scoring")
    ] = False,
    workers: Annotated[int, typer.Option(help="Processes to use; 0 = all CPU cores.", rich_help_panel="Scoring")] = 0,
    boundary_kernel: Annotated[
        int | None,
        typer.Option(
            help="mBIoU erosion by a fixed odd KxK square (CEP: 23) instead of 2% of the image diagonal.",
            rich_help_panel="Scoring",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Score predicted masks against ground truth: mIoU, per-class IoU, coverage, boundary IoU."""
    first_output = json_path or csv_path or per_image
    remember_output_folder(first_output.parent if first_output else None)
    from pseudolabel.datasets import resolve_prompts
    from pseudolabel.evaluate.scoring import pair_with_dataset, pair_with_folder, score_pairs
    from pseudolabel.evaluate.summary import (
        per_image_rows,
        report_table,
        score_summary,
        summary_lines,
        worst_table,
        write_csv,
        write_json,
        write_per_image_csv,
    )  # fmt: skip

    if (gt is None) == (dataset is None):
        raise ConfigError("give exactly one of --gt DIR or --dataset voc|coco (with --root)")
    if dataset is not None:
        if dataset.value == "folder":
            raise ConfigError("to score a folder dataset, pass its GT mask folder with --gt DIR")
        source = DatasetArgs(dataset, root, split, None, prompts, classes, sys.maxsize).open()
        prompt_set = source.prompts
        pair_set = pair_with_dataset(pred, source, allow_missing)
    else:
        prompt_set = resolve_prompts("voc", prompts, classes)
        pair_set = pair_with_folder(pred, gt, allow_missing)
    if boundary_kernel is not None and (boundary_kernel < 3 or boundary_kernel % 2 == 0):
        raise ConfigError(f"--boundary-kernel must be an odd number of pixels >= 3, got {boundary_kernel}")
    count = num_classes or prompt_set.num_classes
    if count < 2 or count > 255:
        raise ConfigError(f"--num-classes must be 2..255 (background included), got {count}")
    names = prompt_set.class_names if count == prompt_set.num_classes else [f"class {i}" for i in range(count)]
    with progress_bar() as progress:
        task = progress.add_task("scoring", total=len(pair_set.pairs))
        counts, image_scores = score_pairs(
            pair_set.pairs, count, workers or None, lambda n: progress.advance(task, n), boundary_kernel
        )
    report = score_summary(counts, names, pair_set, boundary_kernel)
    console.print(report_table(report))
    for line in summary_lines(report):
        console.print(line, highlight=False)
    if worst > 0:
        console.print(worst_table(image_scores, worst))
    if per_image:
        report["per_image"] = per_image_rows(image_scores)
        write_per_image_csv(per_image, image_scores, names)
    if json_path:
        write_json(json_path, report)
    if csv_path:
        write_csv(csv_path, report)
    if first_output:
        write_resolved_config(first_output.with_suffix(".config.yaml"), ctx)


@app.command()
def inspect(
    ctx: typer.Context,
    dataset: DatasetOption,
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    check_images: Annotated[
        bool, typer.Option(help="Decode every image; report failures.", rich_help_panel="Checks")
    ] = False,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    config: ConfigOption = None,
) -> None:
    """Summarise a dataset split: images, labels per class, GT masks, unreadable files."""
    from pseudolabel.evaluate.dataset_summary import summarize_dataset

    source = open_dataset(ctx.params)
    with progress_bar() as progress:
        task = progress.add_task("reading", total=len(source.ids()))
        summary = summarize_dataset(source, check_images, lambda: progress.advance(task))
    table = Table(title=f"{source.name} {getattr(source, 'split', '')}: {summary.num_images} images")
    table.add_column("id", justify="right")
    table.add_column("class")
    table.add_column("images", justify="right")
    for class_id, name in enumerate(source.class_names[1:], start=1):
        table.add_row(str(class_id), name, str(summary.images_per_class[class_id]))
    console.print(table)
    console.print(f"{summary.num_with_gt} of {summary.num_images} images have a GT mask", highlight=False)
    for image_id, message in summary.problems:
        err_console.print(f"[yellow]skipped[/] {escape(image_id)}: {escape(message)}", highlight=False, soft_wrap=True)
    if summary.problems:
        err_console.print(f"{len(summary.problems)} images have problems (listed above)")

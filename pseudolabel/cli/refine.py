"""``pseudolabel refine``: refine any tool's masks (or saved scores) with a chain of refiners."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pseudolabel.cli.app import app, deprecated, remember_output_folder
from pseudolabel.cli.components import refuse_other_components_options, with_component_options
from pseudolabel.cli.config_file import write_run_config
from pseudolabel.cli.flag_values import (
    chosen_sam,
    cpu_model_settings,
    model_settings,
    record_resolved_precision,
    refiner_settings,
)
from pseudolabel.cli.options import (
    DATA,
    RUN,
    BatchSizeOption,
    ClassesOption,
    CompileSamOption,
    ConfigOption,
    DatasetOption,
    DeviceOption,
    EngineName,
    EngineOption,
    GpusPerWorkerOption,
    LabelConfidenceOption,
    LabelsOption,
    LimitOption,
    MaxPixelsOption,
    OldRayWorkersOption,
    OverwriteOption,
    Precision,
    PrecisionOption,
    PromptsOption,
    RayAddressOption,
    RayWorkersOption,
    RefineOption,
    ReportOption,
    RootOption,
    SamCheckpointOption,
    SamOption,
    ShardOption,
    SplitOption,
    open_dataset,
)  # fmt: skip
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS
from pseudolabel.core.scoremaps import DEFAULT_LABEL_CONFIDENCE
from pseudolabel.settings import ModelSettings


def refiner_names(refine: str | None, method: str | None, sam: str | None) -> tuple[str, ...]:
    """The refiner chain: ``--refine``, else the deprecated ``--method``, else ``sam`` when ``--sam``
    names a variant (``refine --sam vit_b`` means SAM refinement)."""
    from pseudolabel.registry import parse_refiners

    if method is not None:
        deprecated("refine --method", "--refine")
        if refine is not None:
            raise ConfigError("give --refine only (--method is its deprecated alias)")
        refine = method
    if refine is None and sam is not None:
        refine = "sam"
    names = parse_refiners(refine)
    if not names:
        raise ConfigError("name the refiners: --refine crf, --refine sam (or --sam vit_b), or a chain like crf,sam")
    return names


@app.command()
@with_component_options("refiner", "sam")
def refine(
    ctx: typer.Context,
    dataset: DatasetOption,
    masks: Annotated[Path, typer.Option(help="Masks to refine, <id>.png, from any tool.", rich_help_panel=DATA)],
    out: Annotated[Path, typer.Option(help="Output: <id>.png, manifest.jsonl, config.yaml.", rich_help_panel=DATA)],
    refine: RefineOption = None,
    method: Annotated[str | None, typer.Option(hidden=True, help="Deprecated alias of --refine.")] = None,
    scores: Annotated[
        Path | None, typer.Option(help="Saved scores <id>.npz, used with the masks.", rich_help_panel=DATA)
    ] = None,
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    label_confidence: LabelConfidenceOption = DEFAULT_LABEL_CONFIDENCE,
    sam: SamOption = None,
    sam_checkpoint: SamCheckpointOption = ModelSettings.sam_checkpoint,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    limit: LimitOption = None,
    shard: ShardOption = "0/1",
    overwrite: OverwriteOption = False,
    num_workers: Annotated[
        int | None, typer.Option(help="Processes (default: all cores for crf alone, else 2).", rich_help_panel=RUN)
    ] = None,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    engine: EngineOption = EngineName.local,
    ray_address: RayAddressOption = None,
    ray_workers: RayWorkersOption = None,
    workers: OldRayWorkersOption = None,
    gpus_per_worker: GpusPerWorkerOption = None,
    batch_size: BatchSizeOption = None,
    compile_sam: CompileSamOption = False,
    report: ReportOption = False,
    config: ConfigOption = None,
) -> None:
    """Refine existing masks (palette PNGs or soft scores) with DenseCRF, SAM, or a chain of both."""
    remember_output_folder(out)
    from pseudolabel.cli.running import make_engine, run_with_progress
    from pseudolabel.core.devices import default_batch_size
    from pseudolabel.registry import ModelHub, check_weights, create_refiners, refine_workers, run_models
    from pseudolabel.runner.loop import RunOptions
    from pseudolabel.runner.per_image import StoredMaskRefine
    from pseudolabel.runner.torchrun import run_shard

    names = refiner_names(refine, method, sam)
    ray = make_engine(engine, ray_address, ray_workers, gpus_per_worker, workers)
    if not masks.is_dir():
        raise ConfigError(f"mask folder {masks} does not exist")
    if scores is not None and not scores.is_dir():
        raise ConfigError(f"scores folder {scores} does not exist")
    refuse_other_components_options(ctx, "sam", chosen_sam(ctx.params))
    flags = dict(ctx.params)
    # a Ray actor resolves --device on its own node; locally it is checked here, before any work
    models, settings = (model_settings(flags) if ray is None else None), refiner_settings(flags, names)
    record_resolved_precision(ctx.params, models.device if models else None)
    decoders, in_workers = refine_workers(names, num_workers)
    batch = default_batch_size(batch_size, models.device if models else None)
    shard_here = run_shard(shard)
    run = RunOptions(out, None, overwrite, limit, shard_here, decoders, label_in_workers=in_workers, batch_size=batch)
    source = open_dataset(ctx.params)
    # the flags and the dataset checked first, then every checkpoint (which may download), before any work
    check_weights(models or cpu_model_settings(flags), run_models(None, None, names))

    def make_image_function() -> StoredMaskRefine:
        hub = ModelHub(models or model_settings(flags))
        refiners = create_refiners(names, hub, settings)
        return StoredMaskRefine(masks, scores, refiners, source.num_classes, label_confidence, hub.batch_preparer())

    write_run_config(out, ctx, overwrite)
    run_with_progress("refine", source, make_image_function, run, out, report, ray)

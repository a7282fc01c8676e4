"""``pseudolabel generate``: flags -> settings -> registry builders -> the run."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pseudolabel.cli.app import app, remember_output_folder
from pseudolabel.cli.components import choices, names, refuse_other_components_options, with_component_options
from pseudolabel.cli.config_file import write_run_config
from pseudolabel.cli.flag_values import (
    chosen_sam,
    cpu_model_settings,
    labeler_settings,
    model_settings,
    record_resolved_precision,
    refiner_settings,
)
from pseudolabel.cli.options import (
    CAM,
    DATA,
    EXCLUSION,
    GROUNDED,
    METHOD,
    REFINEMENT,
    RUN,
    SAM3,
    ZERO_SHOT,
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
    WorkerProcessesOption,
    open_dataset,
)  # fmt: skip
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_SIDE
from pseudolabel.core.scoremaps import DEFAULT_LABEL_CONFIDENCE, DEFAULT_UNSURE_MARGIN
from pseudolabel.labelers.options import (
    ExclusionOptions,
    PromptingOptions,
    ZeroShotOptions,
)
from pseudolabel.settings import ModelSettings

INSTANCE_LABELERS = ("grounded-sam", "sam3")
"""Labelers whose masks are instances (``--save-instances``)."""
Method = choices("labeler", "Method")
"""The registered labelers ``--method`` takes."""


class Synonyms(str, Enum):
    """How class names become prompts."""

    none = "none"
    fuse = "fuse"
    detector = "detector"
    pole = "pole"


def _option(help_text: str, panel: str, *names: str) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help_text, rich_help_panel=panel)


@app.command()
@with_component_options("labeler", "refiner", "sam")
def generate(
    ctx: typer.Context,
    dataset: DatasetOption,
    out: Annotated[Path, _option("Output folder: <id>.png, manifest.jsonl, config.yaml.", DATA)],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    method: Annotated[Method, _option(f"Labeler: {names('labeler')}.", METHOD)] = "cam",  # type: ignore[valid-type]
    clip_model: Annotated[str, _option("open_clip architecture or JSON config.", CAM)] = ModelSettings.clip_model,
    clip_weights: Annotated[str, _option("default (OpenAI's), a file, or random.", CAM)] = (ModelSettings.clip_weights),
    synonyms: Annotated[
        Synonyms | None, _option("none, fuse, detector or pole (default: cam fuse, grounded-sam, sam3 none).", CAM)
    ] = None,
    pole_candidates: Annotated[int, _option("POLE: names per class.", CAM)] = PromptingOptions.pole_candidates,
    detector: Annotated[str, _option(f"{names('detector')}, or a detector config .json.", GROUNDED)] = (
        ModelSettings.detector
    ),
    detector_weights: Annotated[str, _option("default, registry name, file, folder, random.", GROUNDED)] = (
        ModelSettings.detector_weights
    ),
    sam3_model: Annotated[str, _option("sam3, or a transformers Sam3Config .json.", SAM3)] = ModelSettings.sam3_model,
    sam3_checkpoint: Annotated[str, _option("default, sam3, sam3_meta, a file, or random.", SAM3)] = (
        ModelSettings.sam3_checkpoint
    ),
    exclude: Annotated[bool, _option("ELSE-style exclusion of impossible classes.", EXCLUSION)] = False,
    exclusion_threshold: Annotated[float, _option("Exclude when P_ex > this.", EXCLUSION)] = (
        ExclusionOptions.threshold
    ),
    exclusion_weights: Annotated[str, _option("clip, or a CLIPN checkpoint.", EXCLUSION)] = ExclusionOptions.weights,
    zero_shot_top_k: Annotated[int, _option("Candidate classes per image.", ZERO_SHOT)] = ZeroShotOptions.top_k,
    zero_shot_min_probability: Annotated[float, _option("Keep candidates above this CLIP probability.", ZERO_SHOT)] = (
        ZeroShotOptions.min_probability
    ),
    unsure_margin: Annotated[float, _option("255 where the two best scores are closer.", REFINEMENT)] = (
        DEFAULT_UNSURE_MARGIN
    ),
    refine: RefineOption = None,
    label_confidence: LabelConfidenceOption = DEFAULT_LABEL_CONFIDENCE,
    sam: SamOption = None,
    sam_checkpoint: SamCheckpointOption = ModelSettings.sam_checkpoint,
    save_scores: Annotated[Path | None, _option("Also save float16 scores <id>.npz here.", RUN)] = None,
    save_instances: Annotated[
        Path | None, _option("grounded-sam, sam3: also save their instance masks <id>.npz here (for export).", RUN)
    ] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    limit: LimitOption = None,
    shard: ShardOption = "0/1",
    overwrite: OverwriteOption = False,
    num_workers: WorkerProcessesOption = None,
    seed: Annotated[int, _option("Seed for anything random (random weights too).", RUN)] = 0,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    max_side: Annotated[int, _option("Longest side the models see (0: full size); masks stay full size.", RUN)] = (
        DEFAULT_MAX_SIDE
    ),
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
    """Generate pseudo-label masks from image-level labels."""
    remember_output_folder(out)
    from pseudolabel.cli.running import make_engine, run_with_progress
    from pseudolabel.core.devices import LocalWorkers, default_batch_size, local_workers
    from pseudolabel.registry import (
        ModelHub,
        check_weights,
        create_labeler_scorer,
        create_refiners,
        parse_refiners,
        run_models,
    )
    from pseudolabel.runner.loop import RunOptions
    from pseudolabel.runner.per_image import ScoreRefineDecode
    from pseudolabel.runner.torchrun import run_shard

    refuse_other_components_options(ctx, "sam", chosen_sam(ctx.params))
    flags = dict(ctx.params)
    ray = make_engine(engine, ray_address, ray_workers, gpus_per_worker, workers)
    # a Ray actor resolves --device on its own node; locally it is checked here, before any work
    models = model_settings(flags) if ray is None else None
    record_resolved_precision(ctx.params, models.device if models else None)
    labeler = labeler_settings(flags)
    refiner_names = parse_refiners(refine)
    refiners = refiner_settings(flags, refiner_names)
    if max_side and max_side < 32:
        raise ConfigError(f"--max-side must be 0 (full size) or at least 32 pixels, got {max_side}")
    if save_instances is not None and method.value not in INSTANCE_LABELERS:
        raise ConfigError("--save-instances keeps instance masks; it needs --method grounded-sam or sam3")
    batch = default_batch_size(batch_size, models.device if models else None)
    workers = local_workers(num_workers, models.device, batch) if models else LocalWorkers(0)
    run = RunOptions(
        out, save_scores, overwrite, limit, run_shard(shard), workers.processes, workers.label_in_workers,
        instances_dir=save_instances, batch_size=batch,
    )  # fmt: skip
    source = open_dataset(ctx.params)
    # the flags and the dataset checked first, then every checkpoint (which may download), before any work
    check_weights(models or cpu_model_settings(flags), run_models(method.value, labeler, refiner_names))

    def make_image_function() -> ScoreRefineDecode:
        hub = ModelHub(models or model_settings(flags))
        scorer = create_labeler_scorer(method.value, hub, source.prompts, labeler)
        refiner_chain = create_refiners(refiner_names, hub, refiners)
        return ScoreRefineDecode(scorer, unsure_margin, refiner_chain, max_side or None, hub.batch_preparer())

    write_run_config(out, ctx, overwrite)
    run_with_progress("generate", source, make_image_function, run, out, report, ray)

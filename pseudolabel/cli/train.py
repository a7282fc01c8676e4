"""``pseudolabel train-seg`` and ``pseudolabel predict``: the DeepLabV2 second stage."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TextColumn

from pseudolabel.cli.app import app, console, err_console, progress_bar, remember_output_folder
from pseudolabel.cli.config_file import write_resolved_config, write_run_config
from pseudolabel.cli.options import (
    DATA,
    RUN,
    ClassesOption,
    ConfigOption,
    DatasetName,
    DatasetOption,
    DeviceOption,
    EngineName,
    EngineOption,
    GpusPerWorkerOption,
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
    ReportOption,
    RootOption,
    ShardOption,
    SplitOption,
    WorkerProcessesOption,
    open_dataset,
)  # fmt: skip
from pseudolabel.cli.running import make_engine, run_with_progress
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS
from pseudolabel.labelers.options import parse_scales


class Loss(str, Enum):
    """Training losses."""

    ce = "ce"
    balanced = "balanced"


@app.command("train-seg")
def train_seg(
    ctx: typer.Context,
    dataset: Annotated[DatasetName, typer.Option(help="Dataset kind (images; labels come from --masks).")],
    masks: Annotated[
        Path,
        typer.Option(help="Folder of training masks <id>.png (pseudo-labels from any tool).", rich_help_panel=DATA),
    ],
    out: Annotated[
        Path, typer.Option(help="Run folder: last.pt, iter_*.pt, metrics.jsonl, config.yaml.", rich_help_panel=DATA)
    ],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    val_split: Annotated[
        str | None, typer.Option(help="Split with GT masks for periodic val mIoU.", rich_help_panel=DATA)
    ] = None,
    val_every: Annotated[int, typer.Option(help="Val mIoU every N iterations (0 = never).", rich_help_panel=DATA)] = 0,
    backbone: Annotated[
        str,
        typer.Option(
            help="resnet101-caffe (DeepLab's published one), resnet101 (torchvision), resnet50, resnet18.",
            rich_help_panel="Model",
        ),
    ] = "resnet101",
    backbone_weights: Annotated[
        str,
        typer.Option(
            help="default: the backbone's published init (resnet101: ImageNet, alias imagenet; resnet101-caffe: "
            "deeplab-pytorch's COCO init, alias coco), a state-dict file (torchvision or deeplab-pytorch layout), "
            "or random.",
            rich_help_panel="Model",
        ),
    ] = "default",
    freeze_bn: Annotated[
        bool | None,
        typer.Option(
            help="Freeze batch norm (default: yes for pretrained backbones, no for random).", rich_help_panel="Model"
        ),
    ] = None,
    iters: Annotated[
        int, typer.Option(help="Training iterations (poly schedule spans them).", rich_help_panel="Schedule")
    ] = 20_000,
    batch_size: Annotated[
        int, typer.Option(help="Images per iteration, over all processes and accumulation.", rich_help_panel="Schedule")
    ] = 10,
    accumulate: Annotated[
        int, typer.Option(help="Gradient-accumulation steps per iteration.", rich_help_panel="Schedule")
    ] = 2,
    crop_size: Annotated[int, typer.Option(help="Square training crop in pixels.", rich_help_panel="Schedule")] = 321,
    lr: Annotated[
        float, typer.Option(help="Backbone learning rate (ASPP weights x10, biases x20).", rich_help_panel="Schedule")
    ] = 2.5e-4,
    weight_decay: Annotated[
        float, typer.Option(help="Weight decay (not on ASPP biases).", rich_help_panel="Schedule")
    ] = 5e-4,
    lr_step: Annotated[
        int, typer.Option(help="Update the poly learning rate every N iterations.", rich_help_panel="Schedule")
    ] = 10,
    msc: Annotated[
        bool, typer.Option(help="Multi-scale loss: scales 1, 0.5, 0.75 and their max.", rich_help_panel="Model")
    ] = True,
    train_scales: Annotated[
        str,
        typer.Option(
            help="Random-scale augmentation: comma-separated scales to draw from.", rich_help_panel="Schedule"
        ),
    ] = "0.5,0.75,1.0,1.25,1.5",
    loss: Annotated[
        Loss, typer.Option(help="ce, or balanced (classes weighted by inverse pixel count).", rich_help_panel="Model")
    ] = Loss.ce,
    log_every: Annotated[
        int, typer.Option(help="Write a metrics.jsonl record every N iterations.", rich_help_panel=RUN)
    ] = 20,
    save_every: Annotated[
        int, typer.Option(help="Keep iter_N.pt every N iterations (last.pt always).", rich_help_panel=RUN)
    ] = 1000,
    resume: Annotated[
        bool, typer.Option(help="Continue from OUT/last.pt exactly where it stopped.", rich_help_panel=RUN)
    ] = False,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    num_workers: Annotated[int, typer.Option(help="Data-loading worker processes.", rich_help_panel=RUN)] = 2,
    seed: Annotated[
        int, typer.Option(help="Seed for initialisation, data order and augmentation.", rich_help_panel=RUN)
    ] = 0,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    config: ConfigOption = None,
) -> None:
    """Train DeepLabV2 on pseudo-label masks (torchrun --nproc-per-node N -m pseudolabel train-seg for DDP)."""
    remember_output_folder(out)
    from pseudolabel.cli.flag_values import record_resolved_precision
    from pseudolabel.core.devices import resolve_device
    from pseudolabel.runner.loop import StopRequest
    from pseudolabel.runner.torchrun import is_main_process, local_device
    from pseudolabel.train.predict import val_miou_evaluator
    from pseudolabel.train.trainer import TrainConfig, train

    if not masks.is_dir():
        raise ConfigError(f"mask folder {masks} does not exist")
    source = open_dataset(ctx.params)
    # what --precision auto becomes on this machine is what config.yaml and the checkpoint hold
    record_resolved_precision(ctx.params, resolve_device(local_device(device)))
    settings = TrainConfig(
        out_dir=out, masks_dir=masks, iterations=iters, batch_size=batch_size, accumulate=accumulate,
        crop_size=crop_size, lr=lr, lr_step=lr_step, weight_decay=weight_decay, msc=msc,
        train_scales=parse_scales(train_scales, "--train-scales"), loss=loss.value, backbone=backbone,
        backbone_weights=backbone_weights,
        freeze_bn=freeze_bn, seed=seed,
        log_every=log_every, save_every=save_every, val_every=val_every, num_workers=num_workers, device=device,
        precision=ctx.params["precision"], resume=resume,
    )  # fmt: skip
    evaluate = None
    if val_split:
        evaluate = val_miou_evaluator(open_dataset(ctx.params, val_split))
    main_process = is_main_process()
    if main_process:
        write_resolved_config(out / "config.yaml", ctx)
    progress = progress_bar(TextColumn("loss {task.fields[loss]}"), disable=not main_process)
    with progress, StopRequest(lambda: err_console.print("saving and stopping after this iteration")) as stop:
        task = progress.add_task("train", total=iters, loss="-")
        result = train(
            source, settings, evaluate,
            should_stop=lambda: stop.requested,
            on_iteration=lambda i, value: progress.update(task, completed=i, loss=f"{value:.4f}"),
        )  # fmt: skip
    if main_process:
        state = "stopped" if result.stopped_early else "finished"
        console.print(
            f"{state} at iteration {result.iteration} (loss {result.last_loss:.4f}) in {result.seconds:.0f} s; "
            f"checkpoint {out / 'last.pt'}",
            highlight=False,
        )
    if result.stopped_early:
        raise typer.Exit(130)


@app.command()
def predict(
    ctx: typer.Context,
    checkpoint: Annotated[
        str,
        typer.Option(
            help="A train-seg checkpoint (RUN/last.pt), a deeplab-pytorch DeepLabV2 state dict, or deeplab_voc12_msc "
            "(deeplab-pytorch's VOC model from the weights cache).",
            rich_help_panel="Model",
        ),
    ],
    dataset: DatasetOption,
    out: Annotated[Path, typer.Option(help="Output folder: <id>.png, manifest.jsonl, config.yaml.")],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    scales: Annotated[
        str,
        typer.Option(
            help="Comma-separated test scales; logits max-fused on the first's grid.", rich_help_panel="Model"
        ),
    ] = "1.0,0.5,0.75",
    flip: Annotated[
        bool, typer.Option(help="Also max-fuse horizontally flipped views.", rich_help_panel="Model")
    ] = False,
    crf: Annotated[bool, typer.Option(help="Refine with DenseCRF.", rich_help_panel="Model")] = False,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    limit: LimitOption = None,
    shard: ShardOption = "0/1",
    overwrite: OverwriteOption = False,
    num_workers: WorkerProcessesOption = None,
    max_image_pixels: MaxPixelsOption = DEFAULT_MAX_IMAGE_PIXELS,
    engine: EngineOption = EngineName.local,
    ray_address: RayAddressOption = None,
    ray_workers: RayWorkersOption = None,
    workers: OldRayWorkersOption = None,
    gpus_per_worker: GpusPerWorkerOption = None,
    report: ReportOption = False,
    config: ConfigOption = None,
) -> None:
    """Predict masks with a trained DeepLabV2 (multi-scale max, optional flip and CRF)."""
    remember_output_folder(out)
    from pseudolabel.cli.flag_values import record_resolved_precision
    from pseudolabel.core.devices import LocalWorkers, autocast_dtype, local_workers, resolve_device
    from pseudolabel.registry import create_refiners
    from pseudolabel.runner.loop import RunOptions
    from pseudolabel.runner.torchrun import local_device, run_shard
    from pseudolabel.settings import RefinerSettings
    from pseudolabel.train.predict import SegmentationPredictor, model_from_checkpoint, resolve_checkpoint

    ray = make_engine(engine, ray_address, ray_workers, gpus_per_worker, workers)
    source = open_dataset(ctx.params)
    test_scales = parse_scales(scales)
    # a Ray actor resolves --device on its own node; locally it is checked here, before any work
    torch_device = resolve_device(local_device(device)) if ray is None else None
    record_resolved_precision(ctx.params, torch_device)
    checkpoint_path = resolve_checkpoint(checkpoint)
    workers = local_workers(num_workers, torch_device) if torch_device else LocalWorkers(0)
    run = RunOptions(out, None, overwrite, limit, run_shard(shard), workers.processes, workers.label_in_workers)

    def make_image_function() -> SegmentationPredictor:
        model_device = torch_device or resolve_device(device)
        model = model_from_checkpoint(checkpoint_path, source.num_classes, model_device)
        refiner = create_refiners(("crf",), None, RefinerSettings())[0] if crf else None  # CRF needs no model
        dtype = autocast_dtype(precision.value, model_device)
        return SegmentationPredictor(model, test_scales, flip, refiner, dtype)

    write_run_config(out, ctx, overwrite)
    run_with_progress("predict", source, make_image_function, run, out, report, ray)

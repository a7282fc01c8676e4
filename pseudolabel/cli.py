"""The ``pseudolabel`` command: flags -> config -> library call. Thin on purpose."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from pseudolabel import __version__
from pseudolabel.config import load_config_file, write_resolved_config
from pseudolabel.errors import ConfigError, PseudolabelError

console = Console()
err_console = Console(stderr=True)


class PseudolabelGroup(TyperGroup):
    """Prints a user error as one line on stderr and exits 1, without a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PseudolabelError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            ctx.exit(1)


app = typer.Typer(
    cls=PseudolabelGroup,
    help="Image-level labels in, per-pixel pseudo-label masks out: generate, refine and score them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    cls=PseudolabelGroup, help="List, download and verify model checkpoints.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


class DatasetName(str, Enum):
    """Datasets the ``--dataset`` option knows."""

    voc = "voc"
    coco = "coco"
    folder = "folder"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML file of option values; flags given on the command line override it.",
        callback=load_config_file,
        is_eager=True,
    ),
]
RootOption = Annotated[
    Path | None, typer.Option(help="Dataset folder: VOC2012 (holding JPEGImages/), COCO root, or image folder.")
]
SplitOption = Annotated[
    str | None, typer.Option(help="Split: VOC ImageSets/Segmentation list (train), COCO split (train2014).")
]
LabelsOption = Annotated[
    Path | None,
    typer.Option("--labels", help="Folder dataset: CSV or JSON file, image -> class names; none = no labels."),
]
PromptsOption = Annotated[
    str | None, typer.Option(help="Prompt set: voc, coco, or a YAML file (default: the dataset's).")
]
ClassesOption = Annotated[
    Path | None, typer.Option(help="Class-list file (one name a line) replacing the prompt set's classes.")
]
MaxPixelsOption = Annotated[
    int, typer.Option(help="Refuse images with more pixels than this (decompression-bomb guard).")
]


def _version(value: bool) -> None:
    if value:
        console.print(f"pseudolabel {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Image-level labels in, per-pixel pseudo-label masks out."""


def _progress(*extra: ProgressColumn, disable: bool = False) -> Progress:
    """The progress bar of every run: description, bar, done/total, ``extra`` columns, time left."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )


def _open_dataset(
    dataset: DatasetName,
    root: Path | None,
    split: str | None,
    labels: Path | None,
    prompts: str | None,
    classes: Path | None,
    max_image_pixels: int,
) -> Any:
    from pseudolabel.datasets import build_dataset, resolve_prompts

    if root is None:
        raise ConfigError(f"--dataset {dataset.value} needs --root DIR")
    prompt_set = resolve_prompts(dataset.value, prompts, classes)
    return build_dataset(dataset.value, root, split, prompt_set, labels, None, max_image_pixels)


@app.command()
def score(
    ctx: typer.Context,
    pred: Annotated[Path, typer.Option(help="Folder of predicted masks, <id>.png (palette, grey or RGB).")],
    gt: Annotated[Path | None, typer.Option(help="Folder of GT masks; every GT mask in it is scored.")] = None,
    dataset: Annotated[DatasetName | None, typer.Option(help="Score a dataset split's GT instead of --gt.")] = None,
    root: RootOption = None,
    split: SplitOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    num_classes: Annotated[
        int | None, typer.Option(help="Number of classes incl. background (default: the prompt set's, 21 for VOC).")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write all figures as JSON here.")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write per-class figures as CSV here.")] = None,
    allow_missing: Annotated[
        bool, typer.Option(help="Count missing predictions as all-unsure instead of failing.")
    ] = False,
    workers: Annotated[int, typer.Option(help="Processes to use; 0 = all CPU cores.")] = 0,
    boundary_kernel: Annotated[
        int | None,
        typer.Option(help="mBIoU erosion by a fixed odd KxK square (CEP: 23) instead of 2% of the image diagonal."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Score predicted masks against ground truth: mIoU, per-class IoU, coverage, boundary IoU."""
    from pseudolabel.datasets import resolve_prompts
    from pseudolabel.score_report import build_report, report_table, summary_lines, write_csv, write_json
    from pseudolabel.scoring import pair_with_dataset, pair_with_folder, score_pairs

    if (gt is None) == (dataset is None):
        raise ConfigError("give exactly one of --gt DIR or --dataset voc|coco (with --root)")
    if dataset is not None:
        if dataset is DatasetName.folder:
            raise ConfigError("to score a folder dataset, pass its GT mask folder with --gt DIR")
        source = _open_dataset(dataset, root, split, None, prompts, classes, sys.maxsize)
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
    with _progress() as progress:
        task = progress.add_task("scoring", total=len(pair_set.pairs))
        counts = score_pairs(
            pair_set.pairs, count, workers or None, lambda n: progress.advance(task, n), boundary_kernel
        )
    report = build_report(counts, names, pair_set, boundary_kernel)
    console.print(report_table(report))
    for line in summary_lines(report):
        console.print(line, highlight=False)
    if json_path:
        write_json(json_path, report)
    if csv_path:
        write_csv(csv_path, report)
    first_output = json_path or csv_path
    if first_output:
        write_resolved_config(first_output.with_suffix(".config.yaml"), ctx)


@app.command()
def inspect(
    dataset: Annotated[DatasetName, typer.Option(help="Dataset kind.")],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    check_images: Annotated[bool, typer.Option(help="Decode every image and report those that fail (slower).")] = False,
    max_image_pixels: MaxPixelsOption = 89_478_485,
    config: ConfigOption = None,
) -> None:
    """Summarise a dataset split: images, labels per class, GT masks, unreadable files."""
    from pseudolabel.dataset_summary import summarize_dataset

    source = _open_dataset(dataset, root, split, labels, prompts, classes, max_image_pixels)
    with _progress() as progress:
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
        err_console.print(f"[yellow]skipped[/] {image_id}: {message}", highlight=False, soft_wrap=True)
    if summary.problems:
        err_console.print(f"{len(summary.problems)} images have problems (listed above)")


class Method(str, Enum):
    """Labelers ``generate --method`` knows."""

    cam = "cam"
    grounded_sam = "grounded-sam"


class Captions(str, Enum):
    """How Grounding DINO is asked for the classes."""

    joint = "joint"
    per_class = "per-class"


class Synonyms(str, Enum):
    """How class names become prompts."""

    none = "none"
    fuse = "fuse"
    detector = "detector"
    pole = "pole"


class RateColumn(ProgressColumn):
    """Images per second of a Rich progress task."""

    def render(self, task: Task) -> Text:
        return Text("-" if task.speed is None else f"{task.speed:.2f} img/s")


def _parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ConfigError(f"--scales must be comma-separated numbers, got {text!r}") from error
    if not scales or any(scale <= 0 for scale in scales):
        raise ConfigError(f"--scales must be positive numbers, got {text!r}")
    return scales


class RefineMethod(str, Enum):
    """Refiners."""

    crf = "crf"
    sam = "sam"


class SamMode(str, Enum):
    """SAM refinement modes."""

    points = "points"
    auto = "auto"


LabelConfidenceOption = Annotated[
    float, typer.Option(help="CRF from a hard mask: probability given to each pixel's label.")
]
MinConfidenceOption = Annotated[
    float | None, typer.Option(help="CRF: mark pixels whose refined probability is below this as 255 (CLIP-ES: 0.95).")
]
CrfIterationsOption = Annotated[int, typer.Option(help="CRF mean-field iterations.")]
SamOption = Annotated[str, typer.Option("--sam", help="SAM variant: vit_b, vit_l or vit_h.")]
SamCheckpointOption = Annotated[
    str, typer.Option(help="default (the variant's checkpoint, downloaded once), a registry name, a file, or random.")
]
SamModeOption = Annotated[SamMode, typer.Option(help="points (CEP point grid) or auto (SEPL automatic masks).")]
GridOption = Annotated[int, typer.Option(help="SAM points mode: N x N grid of candidate points.")]
IouThresholdOption = Annotated[float, typer.Option(help="SAM points mode: keep masks with IoU >= this vs the region.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
LimitOption = Annotated[int | None, typer.Option(help="Only the first N images of the split.")]
ShardOption = Annotated[str, typer.Option(help="i/n: this run does every n-th image from i.")]
OverwriteOption = Annotated[bool, typer.Option(help="Redo images whose outputs exist (default: resume).")]
DecodeWorkersOption = Annotated[
    int | None, typer.Option(help="Image-decoding worker processes (default: 0 on the CPU, up to 4 on CUDA).")
]
PrecisionOption = Annotated[str, typer.Option(help="auto (bf16 on CUDA), fp32, bf16 or fp16.")]


@dataclass(frozen=True)
class RefineSettings:
    """The refinement flags shared by ``generate --refine`` and ``refine``."""

    method: RefineMethod | None
    crf_iterations: int
    label_confidence: float
    min_confidence: float | None
    sam: str
    sam_checkpoint: str
    sam_mode: SamMode
    grid: int
    iou_threshold: float


def _make_refiner(settings: RefineSettings, device: Any) -> Any:
    """The refiner stage for the settings (builds SAM once), or None."""
    if settings.method is RefineMethod.crf:
        from pseudolabel.refiners.crf import CrfOptions, CrfRefiner

        options = CrfOptions(iterations=settings.crf_iterations, label_confidence=settings.label_confidence)
        return CrfRefiner(options, settings.min_confidence)
    if settings.method is RefineMethod.sam:
        from pseudolabel.models.sam import build_sam
        from pseudolabel.refiners.sam import SamRefineOptions, SamRefiner

        options = SamRefineOptions(settings.sam_mode.value, settings.grid, settings.iou_threshold)
        return SamRefiner(build_sam(settings.sam, settings.sam_checkpoint, device), options)
    return None


def _clipn_exclusion(weights: str, prompts: Any, threshold: float, device: Any) -> tuple[Any, Any]:
    """CLIPN's CLIP (image + "yes" text towers) and an exclusion that uses its "no" tower."""
    from pseudolabel.exclusion import ClassExclusion
    from pseudolabel.models.clipn import load_clipn

    clip, no_tower = load_clipn(weights, device)
    return clip, ClassExclusion(clip, prompts, threshold, no_tower)


def _grounded_sam_labeler(
    detector: str,
    detector_weights: str,
    sam: str,
    sam_checkpoint: str,
    prompts: Any,
    options: Any,
    clip: Any,
    exclusion: Any,
    device: Any,
    dtype: Any,
) -> Any:
    """Grounding DINO + SAM, each built once."""
    from pseudolabel.labelers.grounded_sam import GroundedSamLabeler, SamBoxPredictor
    from pseudolabel.models.grounding import build_grounding_dino
    from pseudolabel.models.sam import build_sam

    grounding = build_grounding_dino(detector, detector_weights, device)
    predictor = SamBoxPredictor(build_sam(sam, sam_checkpoint, device), options.sam_batch, dtype)
    return GroundedSamLabeler(grounding, predictor, prompts, options, clip, exclusion, dtype)


def _run_with_progress(title: str, source: Any, make_labeler: Any, run: Any, out: Path) -> None:
    from pseudolabel.pipeline import run_labeler

    with _progress(RateColumn()) as progress:
        task = progress.add_task(title, total=None)
        summary = run_labeler(
            source, make_labeler, run,
            on_start=lambda total: progress.update(task, total=total),
            on_progress=lambda: progress.advance(task),
            on_stop_request=lambda: err_console.print("stopping after the current image (Ctrl-C again to abort)"),
        )  # fmt: skip
    _print_run_summary(summary, out)
    if summary.interrupted:
        raise typer.Exit(130)


@app.command()
def generate(
    ctx: typer.Context,
    dataset: Annotated[DatasetName, typer.Option(help="Dataset kind.")],
    out: Annotated[Path, typer.Option(help="Output folder: <id>.png masks, manifest.jsonl, config.yaml.")],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    method: Annotated[Method, typer.Option(help="Labeler.")] = Method.cam,
    clip_model: Annotated[str, typer.Option(help="open_clip architecture (OpenAI weights need -quickgelu).")] = (
        "ViT-B-16-quickgelu"
    ),
    clip_weights: Annotated[
        str, typer.Option(help="openai (downloaded once into the cache), a state-dict file, or random.")
    ] = "openai",
    synonyms: Annotated[
        Synonyms | None,
        typer.Option(
            help="Class names as prompts: none, fuse (fused names), detector (grounded-sam: the prompt file's "
            "detector names), pole (per-image choice). Default: cam fuse, grounded-sam none."
        ),
    ] = None,
    pole_candidates: Annotated[int, typer.Option(help="POLE: names per class to choose from.")] = 4,
    exclude: Annotated[
        bool,
        typer.Option(
            help="ELSE-style exclusion: drop regions (CAM class regions, SAM masks) whose class "
            "CLIP finds impossible there."
        ),
    ] = False,
    exclusion_threshold: Annotated[float, typer.Option(help="Exclude a (region, class) when P_ex > this.")] = 0.2,
    exclusion_weights: Annotated[
        str, typer.Option(help="clip (reverse prompts on --clip-model) or a CLIPN checkpoint (its 'no' text tower).")
    ] = "clip",
    zero_shot_top_k: Annotated[int, typer.Option(help="--labels none: candidate classes per image.")] = 3,
    zero_shot_min_probability: Annotated[
        float, typer.Option(help="--labels none: keep candidates with CLIP probability above this.")
    ] = 0.1,
    scales: Annotated[str, typer.Option(help="Comma-separated image scales, e.g. 1.0,0.75,1.25.")] = "1.0",
    flip: Annotated[bool, typer.Option(help="Add a horizontally flipped view per scale.")] = False,
    caa: Annotated[bool, typer.Option(help="Refine CAMs with class-aware attention affinity.")] = True,
    caa_threshold: Annotated[float, typer.Option(help="CAA boxes around CAM regions above this share of max.")] = 0.4,
    detector: Annotated[str, typer.Option(help="grounded-sam: Grounding DINO swint, swinb, or a config .json.")] = (
        "swint"
    ),
    detector_weights: Annotated[
        str,
        typer.Option(
            help="grounded-sam: default (the variant's original checkpoint), a registry name, an original "
            "or transformers checkpoint file, a transformers model folder, or random."
        ),
    ] = "default",
    captions: Annotated[
        Captions,
        typer.Option(help="grounded-sam: joint (one caption, one pass) or per-class (one pass per class, SAM_WSSS)."),
    ] = Captions.joint,
    box_threshold: Annotated[float, typer.Option(help="grounded-sam: keep boxes scoring above this.")] = 0.3,
    text_threshold: Annotated[
        float, typer.Option(help="grounded-sam, joint captions: a box detects every class above this.")
    ] = 0.25,
    nms_threshold: Annotated[float, typer.Option(help="grounded-sam: per-class box NMS IoU (1: keep all).")] = 0.7,
    bg_alpha: Annotated[float, typer.Option(help="Background score = (1 - max CAM) ** alpha.")] = 1.0,
    bg_threshold: Annotated[
        float | None, typer.Option(help="Constant background score instead (foreground where a CAM exceeds it).")
    ] = None,
    unsure_margin: Annotated[
        float, typer.Option(help="Mark pixels whose two best scores differ by less than this as 255.")
    ] = 0.05,
    save_scores: Annotated[Path | None, typer.Option(help="Also save soft scores <id>.npz (float16) here.")] = None,
    refine: Annotated[RefineMethod | None, typer.Option(help="Refine each mask: crf or sam (default: none).")] = None,
    crf_iterations: CrfIterationsOption = 10,
    label_confidence: LabelConfidenceOption = 0.7,
    min_confidence: MinConfidenceOption = None,
    sam: SamOption = "vit_b",
    sam_checkpoint: SamCheckpointOption = "default",
    sam_mode: SamModeOption = SamMode.points,
    grid: GridOption = 16,
    iou_threshold: IouThresholdOption = 0.5,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    limit: LimitOption = None,
    shard: ShardOption = "0/1",
    overwrite: OverwriteOption = False,
    num_workers: DecodeWorkersOption = None,
    seed: Annotated[int, typer.Option(help="Seed for anything random (random weights included).")] = 0,
    max_image_pixels: MaxPixelsOption = 89_478_485,
    config: ConfigOption = None,
) -> None:
    """Generate pseudo-label masks from image-level labels."""
    import torch

    from pseudolabel.devices import autocast_dtype, decode_workers, resolve_device
    from pseudolabel.labelers.cam import CamLabeler, CamLabelerOptions
    from pseudolabel.labelers.clip_es import CamOptions
    from pseudolabel.labelers.grounded_sam import GroundedSamOptions
    from pseudolabel.models.clip import build_clip
    from pseudolabel.pipeline import RunOptions, parse_shard
    from pseudolabel.stages import ScoreThenDecode

    grounded = method is Method.grounded_sam
    names = (synonyms or (Synonyms.none if grounded else Synonyms.fuse)).value
    zero_shot = labels is not None and str(labels) == "none"
    torch_device = resolve_device(device)
    run = RunOptions(out, save_scores, overwrite, limit, parse_shard(shard), decode_workers(num_workers, torch_device))
    cam_options = CamOptions(_parse_scales(scales), flip, caa, caa_threshold)
    labeler_options = CamLabelerOptions(
        names, pole_candidates, bg_alpha, bg_threshold, exclude, exclusion_threshold,
        zero_shot=zero_shot, zero_shot_top_k=zero_shot_top_k, zero_shot_min_probability=zero_shot_min_probability,
    )  # fmt: skip
    if names == "detector" and not grounded:
        raise ConfigError("--synonyms detector names Grounding DINO captions; it needs --method grounded-sam")
    grounded_options = GroundedSamOptions(
        box_threshold, text_threshold, nms_threshold, captions.value, names, pole_candidates, exclude=exclude,
        exclusion_threshold=exclusion_threshold, zero_shot=zero_shot, zero_shot_top_k=zero_shot_top_k,
        zero_shot_min_probability=zero_shot_min_probability,
    )  # fmt: skip
    settings = RefineSettings(
        refine, crf_iterations, label_confidence, min_confidence, sam, sam_checkpoint, sam_mode, grid, iou_threshold
    )
    source = _open_dataset(dataset, root, split, labels, prompts, classes, max_image_pixels)
    dtype = autocast_dtype(precision, torch_device)

    def make_labeler() -> ScoreThenDecode:
        torch.manual_seed(seed)
        clip, exclusion = None, None
        if exclude and exclusion_weights != "clip":
            clip, exclusion = _clipn_exclusion(exclusion_weights, source.prompts, exclusion_threshold, torch_device)
        if grounded:
            if clip is None and (exclude or zero_shot or names == "pole"):
                clip = build_clip(clip_model, clip_weights, torch_device)
            scorer = _grounded_sam_labeler(
                detector, detector_weights, sam, sam_checkpoint, source.prompts, grounded_options, clip, exclusion,
                torch_device, dtype,
            )  # fmt: skip
        else:  # CAMs come from --clip-model; a CLIPN exclusion keeps its own CLIP
            clip = build_clip(clip_model, clip_weights, torch_device)
            scorer = CamLabeler(clip, source.prompts, cam_options, labeler_options, dtype, exclusion)
        return ScoreThenDecode(scorer, unsure_margin, _make_refiner(settings, torch_device))

    write_resolved_config(out / "config.yaml", ctx)
    _run_with_progress("generate", source, make_labeler, run, out)


@app.command()
def refine(
    ctx: typer.Context,
    dataset: Annotated[DatasetName, typer.Option(help="Dataset kind (for the images and their labels).")],
    masks: Annotated[Path, typer.Option(help="Folder of masks to refine, <id>.png, from this or any tool.")],
    out: Annotated[Path, typer.Option(help="Output folder: refined <id>.png, manifest.jsonl, config.yaml.")],
    method: Annotated[RefineMethod, typer.Option(help="crf or sam.")],
    scores: Annotated[
        Path | None, typer.Option(help="Folder of soft scores <id>.npz; used instead of the mask where present.")
    ] = None,
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    crf_iterations: CrfIterationsOption = 10,
    label_confidence: LabelConfidenceOption = 0.7,
    min_confidence: MinConfidenceOption = None,
    sam: SamOption = "vit_b",
    sam_checkpoint: SamCheckpointOption = "default",
    sam_mode: SamModeOption = SamMode.points,
    grid: GridOption = 16,
    iou_threshold: IouThresholdOption = 0.5,
    device: DeviceOption = "auto",
    limit: LimitOption = None,
    shard: ShardOption = "0/1",
    overwrite: OverwriteOption = False,
    num_workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: all cores for crf, which runs in them; 2 for sam).")
    ] = None,
    max_image_pixels: MaxPixelsOption = 89_478_485,
    config: ConfigOption = None,
) -> None:
    """Refine existing masks (palette PNGs or soft scores) with DenseCRF or SAM."""
    import os

    from pseudolabel.devices import resolve_device
    from pseudolabel.pipeline import RunOptions, parse_shard
    from pseudolabel.stages import StoredMaskRefine

    if not masks.is_dir():
        raise ConfigError(f"mask folder {masks} does not exist")
    if scores is not None and not scores.is_dir():
        raise ConfigError(f"scores folder {scores} does not exist")
    settings = RefineSettings(
        method, crf_iterations, label_confidence, min_confidence, sam, sam_checkpoint, sam_mode, grid, iou_threshold
    )
    on_cpu = method is RefineMethod.crf
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1) if on_cpu else 2
    run = RunOptions(out, None, overwrite, limit, parse_shard(shard), workers, label_in_workers=on_cpu)
    source = _open_dataset(dataset, root, split, labels, prompts, classes, max_image_pixels)
    torch_device = resolve_device(device)

    def make_labeler() -> StoredMaskRefine:
        refiner = _make_refiner(settings, torch_device)
        return StoredMaskRefine(masks, scores, refiner, source.num_classes, label_confidence)

    write_resolved_config(out / "config.yaml", ctx)
    _run_with_progress("refine", source, make_labeler, run, out)


def _print_run_summary(summary: Any, out: Path) -> None:
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    console.print(
        f"{summary.done} images labelled, {summary.failed} failed, {summary.already_done} already done "
        f"(of {summary.selected} selected) in {summary.seconds:.1f} s ({rate:.2f} img/s); masks in {out}",
        highlight=False,
    )
    if summary.failed:
        err_console.print(f"[yellow]{summary.failed} images failed: see status 'failed' in the manifest[/]")
    if summary.excluded_classes or summary.excluded_pairs:
        dropped = ", ".join(f"{name} ({count})" for name, count in summary.excluded_classes.most_common())
        console.print(
            f"exclusion: {summary.excluded_pairs} (region, class) pairs had P_ex over the threshold; "
            f"regions dropped, by class: {dropped or 'none'}",
            highlight=False,
        )
    if summary.synonym_wins:
        table = Table(title="POLE: how often each name won")
        table.add_column("class")
        table.add_column("chosen names (count)")
        for class_name, wins in sorted(summary.synonym_wins.items()):
            table.add_row(class_name, ", ".join(f"{name} ({count})" for name, count in wins.most_common()))
        console.print(table)


@app.command("train-seg")
def train_seg(
    ctx: typer.Context,
    dataset: Annotated[DatasetName, typer.Option(help="Dataset kind (images; labels come from --masks).")],
    masks: Annotated[Path, typer.Option(help="Folder of training masks <id>.png (pseudo-labels from any tool).")],
    out: Annotated[Path, typer.Option(help="Run folder: last.pt, iter_*.pt, metrics.jsonl, config.yaml.")],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    val_split: Annotated[str | None, typer.Option(help="Split with GT masks for periodic val mIoU.")] = None,
    val_every: Annotated[int, typer.Option(help="Val mIoU every N iterations (0 = never).")] = 0,
    backbone: Annotated[
        str,
        typer.Option(help="resnet101-caffe (DeepLab's published one), resnet101 (torchvision), resnet50, resnet18."),
    ] = "resnet101",
    backbone_weights: Annotated[
        str,
        typer.Option(
            help="imagenet (torchvision ResNet-101, downloaded once), coco (resnet101-caffe: deeplab-pytorch's "
            "deeplabv1_resnet101-coco.pth), a state-dict file (torchvision or deeplab-pytorch layout), or random."
        ),
    ] = "imagenet",
    freeze_bn: Annotated[
        bool | None, typer.Option(help="Freeze batch norm (default: yes for pretrained backbones, no for random).")
    ] = None,
    iters: Annotated[int, typer.Option(help="Training iterations (poly schedule spans them).")] = 20_000,
    batch_size: Annotated[int, typer.Option(help="Images per iteration, over all processes and accumulation.")] = 10,
    accumulate: Annotated[int, typer.Option(help="Gradient-accumulation steps per iteration.")] = 2,
    crop_size: Annotated[int, typer.Option(help="Square training crop in pixels.")] = 321,
    lr: Annotated[float, typer.Option(help="Backbone learning rate (ASPP weights x10, biases x20).")] = 2.5e-4,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (not on ASPP biases).")] = 5e-4,
    lr_step: Annotated[int, typer.Option(help="Update the poly learning rate every N iterations.")] = 10,
    msc: Annotated[bool, typer.Option(help="Multi-scale loss: scales 1, 0.5, 0.75 and their max.")] = True,
    train_scales: Annotated[
        str, typer.Option(help="Random-scale augmentation: comma-separated scales to draw from.")
    ] = "0.5,0.75,1.0,1.25,1.5",
    loss: Annotated[str, typer.Option(help="ce, or balanced (classes weighted by inverse pixel count).")] = "ce",
    log_every: Annotated[int, typer.Option(help="Write a metrics.jsonl record every N iterations.")] = 20,
    save_every: Annotated[int, typer.Option(help="Keep iter_N.pt every N iterations (last.pt always).")] = 1000,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt exactly where it stopped.")] = False,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    num_workers: Annotated[int, typer.Option(help="Data-loading worker processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, data order and augmentation.")] = 0,
    max_image_pixels: MaxPixelsOption = 89_478_485,
    config: ConfigOption = None,
) -> None:
    """Train DeepLabV2 on pseudo-label masks (torchrun --nproc-per-node N -m pseudolabel train-seg for DDP)."""
    import os

    from pseudolabel.pipeline import StopRequest
    from pseudolabel.train.predict import val_miou_evaluator
    from pseudolabel.train.trainer import LOSSES, TrainConfig, train

    if loss not in LOSSES:
        raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}")
    if not masks.is_dir():
        raise ConfigError(f"mask folder {masks} does not exist")
    source = _open_dataset(dataset, root, split, labels, prompts, classes, max_image_pixels)
    settings = TrainConfig(
        out_dir=out, masks_dir=masks, iterations=iters, batch_size=batch_size, accumulate=accumulate,
        crop_size=crop_size, lr=lr, lr_step=lr_step, weight_decay=weight_decay, msc=msc,
        train_scales=_parse_scales(train_scales), loss=loss, backbone=backbone, backbone_weights=backbone_weights,
        freeze_bn=freeze_bn, seed=seed,
        log_every=log_every, save_every=save_every, val_every=val_every, num_workers=num_workers, device=device,
        precision=precision, resume=resume,
    )  # fmt: skip
    evaluate = None
    if val_split:
        evaluate = val_miou_evaluator(
            _open_dataset(dataset, root, val_split, labels, prompts, classes, max_image_pixels)
        )
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        write_resolved_config(out / "config.yaml", ctx)
    progress = _progress(TextColumn("loss {task.fields[loss]}"), disable=not main_process)
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
            "(deeplab-pytorch's VOC model from the weights cache)."
        ),
    ],
    dataset: Annotated[DatasetName, typer.Option(help="Dataset kind.")],
    out: Annotated[Path, typer.Option(help="Output folder: <id>.png, manifest.jsonl, config.yaml.")],
    root: RootOption = None,
    split: SplitOption = None,
    labels: LabelsOption = None,
    prompts: PromptsOption = None,
    classes: ClassesOption = None,
    scales: Annotated[
        str, typer.Option(help="Comma-separated test scales; logits max-fused on the first's grid.")
    ] = "1.0,0.5,0.75",
    flip: Annotated[bool, typer.Option(help="Also max-fuse horizontally flipped views.")] = False,
    crf: Annotated[bool, typer.Option(help="Refine with DenseCRF.")] = False,
    device: DeviceOption = "auto",
    limit: LimitOption = None,
    shard: ShardOption = "0/1",
    overwrite: OverwriteOption = False,
    num_workers: DecodeWorkersOption = None,
    max_image_pixels: MaxPixelsOption = 89_478_485,
    config: ConfigOption = None,
) -> None:
    """Predict masks with a trained DeepLabV2 (multi-scale max, optional flip and CRF)."""
    from pseudolabel.devices import decode_workers, resolve_device
    from pseudolabel.models.weights import resolve_weights
    from pseudolabel.pipeline import RunOptions, parse_shard
    from pseudolabel.refiners.crf import CrfRefiner
    from pseudolabel.train.predict import SegmentationPredictor, model_from_checkpoint

    source = _open_dataset(dataset, root, split, labels, prompts, classes, max_image_pixels)
    test_scales = _parse_scales(scales)
    torch_device = resolve_device(device)
    checkpoint_path = resolve_weights(checkpoint, "segmenter")
    if checkpoint_path is None:
        raise ConfigError("--checkpoint needs trained weights, not random")
    run = RunOptions(out, None, overwrite, limit, parse_shard(shard), decode_workers(num_workers, torch_device))

    def make_labeler() -> SegmentationPredictor:
        model = model_from_checkpoint(checkpoint_path, source.num_classes, torch_device)
        return SegmentationPredictor(model, test_scales, flip, CrfRefiner() if crf else None)

    write_resolved_config(out / "config.yaml", ctx)
    _run_with_progress("predict", source, make_labeler, run, out)


@models_app.command("list")
def models_list() -> None:
    """Show the known checkpoints and whether each is in the cache."""
    from pseudolabel.models.weights import WEIGHTS, cache_dir, cached_path

    table = Table(title=f"checkpoints (cache: {cache_dir()})")
    for heading in ("name", "kind", "size", "cached", "description"):
        table.add_column(heading)
    for spec in WEIGHTS.values():
        table.add_row(
            spec.name, spec.kind, f"{spec.size_mb} MB", "yes" if cached_path(spec).is_file() else "no", spec.description
        )
    console.print(table)


@models_app.command("download")
def models_download(
    names: Annotated[list[str] | None, typer.Argument(help="Registry names (see `pseudolabel models list`).")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Download every checkpoint with a URL.")] = False,
    allow_unverified: Annotated[bool, typer.Option(help="Allow checkpoints whose publisher gives no sha256.")] = False,
) -> None:
    """Download checkpoints into the cache, verifying their sha256."""
    from pseudolabel.models.weights import WEIGHTS, cached_path

    specs = [spec for spec in WEIGHTS.values() if spec.url] if all_models else [_spec(name) for name in names or []]
    if not specs:
        raise ConfigError("name checkpoints to download, or pass --all")
    for spec in specs:
        if cached_path(spec).is_file():
            console.print(f"{spec.name}: already at {cached_path(spec)}", highlight=False)
            continue
        path = _download_with_progress(spec, allow_unverified)
        console.print(f"{spec.name}: saved {path}", highlight=False)


def _download_with_progress(spec: Any, allow_unverified: bool) -> Path:
    from pseudolabel.models.weights import download_weights

    with Progress(
        TextColumn(spec.name), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err_console
    ) as progress:
        task = progress.add_task(spec.name, total=None)
        return download_weights(
            spec, allow_unverified, lambda done, total: progress.update(task, completed=done, total=total)
        )


@models_app.command("verify")
def models_verify(
    names: Annotated[list[str] | None, typer.Argument(help="Registry names; default: all cached ones.")] = None,
) -> None:
    """Check cached checkpoints against their sha256; exit 1 on a mismatch."""
    from pseudolabel.models.weights import WEIGHTS, verify_weights

    specs = [_spec(name) for name in names] if names else list(WEIGHTS.values())
    results = [verify_weights(spec) for spec in specs]
    for result in results:
        if result.status != "missing" or names:
            console.print(
                f"{result.spec.name}: {result.status}" + (f" (sha256 {result.digest})" if result.digest else "")
            )
    mismatched = [r.spec.name for r in results if r.status == "mismatch"]
    if mismatched:
        raise PseudolabelError(f"checksum mismatch: {', '.join(mismatched)}; delete the files and download again")


def _spec(name: str) -> Any:
    from pseudolabel.models.weights import WEIGHTS

    if name not in WEIGHTS:
        raise ConfigError(f"unknown checkpoint {name!r}; known: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


def main() -> None:
    """Console-script entry point."""
    app()

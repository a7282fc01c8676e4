"""Options several commands share, grouped into help panels, and the dataset-arguments object."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from pseudolabel.cli.components import choices
from pseudolabel.cli.config_file import load_config_file
from pseudolabel.core.components import component, registry
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS

METHOD, DATA, CAM, GROUNDED, SAM3, EXCLUSION, ZERO_SHOT, REFINEMENT, RUN, SCALE = (
    "Method", "Data", "CAM", "Grounded-SAM", "sam3", "Exclusion", "Zero-shot (--labels none)", "Refinement", "Run",
    "Scale out",
)  # fmt: skip


DatasetName = choices("dataset", "DatasetName")
"""The registered dataset readers ``--dataset`` takes."""


class Precision(str, Enum):
    """Autocast precision: auto is bf16 on CUDA and on a CPU with native bf16, else fp32."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


SamVariant = choices("sam", "SamVariant")
"""The registered SAM models ``--sam`` takes."""


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML file of option values; command-line flags override it.",
        callback=load_config_file,
        is_eager=True,
        rich_help_panel=RUN,
    ),
]
DatasetOption = Annotated[DatasetName, typer.Option(help="Dataset kind.", rich_help_panel=DATA)]
RootOption = Annotated[
    Path | None, typer.Option(help="VOC2012 folder, COCO root, or image folder.", rich_help_panel=DATA)
]
SplitOption = Annotated[
    str | None, typer.Option(help="Split: VOC list name (train), COCO split (train2014).", rich_help_panel=DATA)
]
LabelsOption = Annotated[
    Path | None,
    typer.Option("--labels", help="Folder: CSV/JSON, folders (class = top folder) or none.", rich_help_panel=DATA),
]
PromptsOption = Annotated[str | None, typer.Option(help="Prompt set: voc, coco or a YAML file.", rich_help_panel=DATA)]
ClassesOption = Annotated[
    Path | None, typer.Option(help="Class-list file replacing the prompt set's classes.", rich_help_panel=DATA)
]
MaxPixelsOption = Annotated[
    int, typer.Option(help="Refuse images with more pixels (decompression-bomb guard).", rich_help_panel=DATA)
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUN)]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        help="auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), else fp32; the run "
        "records what it became.",
        rich_help_panel=RUN,
    ),
]
LimitOption = Annotated[int | None, typer.Option(help="Only the first N images of the split.", rich_help_panel=RUN)]
ShardOption = Annotated[str, typer.Option(help="i/n: every n-th image from i.", rich_help_panel=RUN)]
OverwriteOption = Annotated[bool, typer.Option(help="Redo finished images (default: resume).", rich_help_panel=RUN)]
WorkerProcessesOption = Annotated[
    int | None,
    typer.Option(
        help="Worker processes: on the CPU each decodes and labels its own images with one thread (default 0: "
        "all here, with every core's threads), on CUDA they decode ahead of the GPU (default: <= 4).",
        rich_help_panel=RUN,
    ),
]


class EngineName(str, Enum):
    """Where images are labelled."""

    local = "local"
    ray = "ray"


EngineOption = Annotated[
    EngineName, typer.Option(help="local, or ray (Ray Data over GPUs and machines).", rich_help_panel=SCALE)
]
RayAddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster: auto or ray://host:port (default: a new one).", rich_help_panel=SCALE)
]
RayWorkersOption = Annotated[
    int | None, typer.Option(help="Ray actors, each with its models (default: one per GPU).", rich_help_panel=SCALE)
]
OldRayWorkersOption = Annotated[
    int | None, typer.Option("--workers", help="Deprecated: --ray-workers.", hidden=True, rich_help_panel=SCALE)
]
"""``--workers`` meant Ray actors in the run commands; it means CPU processes in score and report."""
GpusPerWorkerOption = Annotated[
    float | None, typer.Option(help="GPUs per Ray actor (default: 1 when the cluster has GPUs).", rich_help_panel=SCALE)
]
BatchSizeOption = Annotated[
    int | None, typer.Option(help="Images per batch (default: 4 on CUDA, 1 on CPU).", rich_help_panel=SCALE)
]
CompileSamOption = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile SAM's image encoder: on a 2-core CPU in fp32 ViT-B's ran 1.57x faster after a "
        "29 s first call (repaid after ~6 images); each new batch size compiles once more.",
        rich_help_panel=SCALE,
    ),
]
ReportOption = Annotated[
    bool, typer.Option("--report", help="Write an HTML report into OUT/report at the end.", rich_help_panel=RUN)
]
RefineOption = Annotated[
    str | None,
    typer.Option(
        help=f"Refiners in order, comma-separated ({', '.join(registry('refiner'))}), e.g. crf,sam.",
        rich_help_panel=REFINEMENT,
    ),
]
LabelConfidenceOption = Annotated[
    float, typer.Option(help="Score of a hard label's class (input masks, SAM repaints).", rich_help_panel=REFINEMENT)
]
SamOption = Annotated[
    SamVariant | None,  # type: ignore[valid-type]
    typer.Option(
        "--sam",
        metavar="<model>",
        help=f"SAM model (default vit_b): {', '.join(registry('sam'))}.",
        rich_help_panel=REFINEMENT,
    ),
]
SamCheckpointOption = Annotated[
    str, typer.Option(help="default (published), registry name, file, or random.", rich_help_panel=REFINEMENT)
]


@dataclass(frozen=True)
class DatasetArgs:
    """The dataset options every command takes."""

    dataset: DatasetName
    root: Path | None
    split: str | None = None
    labels: Path | None = None
    prompts: str | None = None
    classes: Path | None = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def open(self, split: str | None = None) -> Any:
        """The dataset (``split`` overrides this object's)."""
        from pseudolabel.datasets import resolve_prompts
        from pseudolabel.registry import DATASETS

        if self.root is None:
            raise ConfigError(f"--dataset {self.dataset.value} needs --root DIR")
        given = self.prompts is not None or self.classes is not None
        own_classes = component("dataset", self.dataset.value).own_classes and not given  # labels, categories
        prompt_set = None if own_classes else resolve_prompts(self.dataset.value, self.prompts, self.classes)
        build = DATASETS[self.dataset.value]
        dataset = build(self.root, split or self.split, prompt_set, self.labels, None, self.max_image_pixels)
        if own_classes and dataset.prompts.dataset == "custom":
            show_derived_classes(dataset.prompts)
        show_notices(dataset.notices)
        return dataset


def open_dataset(params: dict[str, Any], split: str | None = None) -> Any:
    """The dataset a command's parameters name (``--dataset``, ``--root``, ``--split`` or
    ``split``, ``--labels``, ``--prompts``, ``--classes``, ``--max-image-pixels``)."""
    arguments = DatasetArgs(
        params["dataset"],
        params["root"],
        params.get("split"),
        params.get("labels"),
        params.get("prompts"),
        params.get("classes"),
        params.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS),
    )
    return arguments.open(split)


def show_notices(notices: list[str]) -> None:
    """Print what reading a dataset left out or changed, before any work."""
    from rich.markup import escape

    from pseudolabel.cli.app import err_console

    for notice in notices:
        err_console.print(f"[yellow]note:[/] {escape(notice)}", highlight=False, soft_wrap=True)


def show_derived_classes(prompts: Any) -> None:
    """Print the id of each class a dataset took from its own labels (no --classes or --prompts)."""
    from rich.markup import escape

    from pseudolabel.cli.app import console

    table = ", ".join(f"{index} {escape(name)}" for index, name in enumerate(prompts.class_names) if index)
    console.print(f"Class ids (the pixel values of masks), from {escape(prompts.source)}: {table}; "
                  "--classes FILE sets them yourself", soft_wrap=True)  # fmt: skip

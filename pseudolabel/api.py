"""The Python API, the registries' public face for notebooks and other tools::

    labeler = pseudolabel.create_labeler("cam", refine=["crf"])
    result = labeler("photo.jpg", ["cat", "sofa"])   # result.label_map: uint8 [H, W]
    summary = pseudolabel.run(labeler, pseudolabel.open_dataset("voc", "VOCdevkit/VOC2012"), "out/cam")

Everything here is what the CLI does, minus flag parsing and printing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.cli.config_file import write_config_document
from pseudolabel.core.devices import autocast_dtype, resolve_device
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_SIDE, load_rgb
from pseudolabel.core.plain import plain
from pseudolabel.core.prompts import PromptSet, load_prompts
from pseudolabel.core.scoremaps import DEFAULT_UNSURE_MARGIN, ScoreMaps
from pseudolabel.datasets.base import Dataset, Sample
from pseudolabel.registry import (
    DATASETS,
    LabelerSettings,
    ModelHub,
    ModelSettings,
    RefinerSettings,
    create_labeler_scorer,
    create_refiners,
    effective_options,
)  # fmt: skip
from pseudolabel.runner.loop import Engine, RunOptions, RunSummary, run_images
from pseudolabel.runner.per_image import Refiner, ScoreRefineDecode
from pseudolabel.runner.recorded_settings import check_and_record

API_COMMAND = "python-api"
"""The command name :func:`run` records in its output folder."""


@dataclass(frozen=True)
class Labeling:
    """One image's result: ``scores`` (the labeler's ScoreMaps, before refinement), ``label_map``
    (uint8 [H, W], class ids of the prompt set, 255 unsure) and what the stages recorded."""

    scores: ScoreMaps
    label_map: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)


class Labeler:
    """Maps an image and its class names to a :class:`Labeling`; models are built once.

    ``settings``: what the labeler was made with that changes its outputs (method, prompt set,
    refiners, model names and weights, labeler and refiner settings), as plain values; :func:`run`
    records it in its output folder."""

    def __init__(self, image_function: ScoreRefineDecode, prompts: PromptSet, settings: dict[str, Any]) -> None:
        self.image_function = image_function
        self.prompts = prompts
        self.settings = settings

    def __call__(self, image: np.ndarray | str | os.PathLike[str], classes: Sequence[str]) -> Labeling:
        """Label ``image`` (uint8 [H, W, 3] RGB, or an image file) given the names of its classes."""
        rgb = load_rgb(image) if isinstance(image, (str, os.PathLike)) else np.ascontiguousarray(image, np.uint8)
        class_ids = tuple(sorted({self.prompts.class_id(name) for name in classes}))
        result = self.image_function(Sample("image", rgb, class_ids, None))
        return Labeling(result.scores, result.label_map, dict(result.record))

    predict = __call__


def _hub(device: str, precision: str, models: ModelSettings | None) -> ModelHub:
    if models is None:
        torch_device = resolve_device(device)
        models = ModelSettings(device=torch_device, autocast_dtype=autocast_dtype(precision, torch_device))
    return ModelHub(models)


def create_labeler(
    method: str = "cam",
    *,
    prompts: str | PromptSet = "voc",
    refine: Sequence[str] = (),
    unsure_margin: float = DEFAULT_UNSURE_MARGIN,
    max_side: int | None = DEFAULT_MAX_SIDE,
    device: str = "auto",
    precision: str = "auto",
    models: ModelSettings | None = None,
    settings: LabelerSettings | None = None,
    refiner_settings: RefinerSettings | None = None,
) -> Labeler:
    """A registered labeler (``cam``, ``grounded-sam``, or a plugin's) followed by registered
    refiners in order. ``models`` (which weights, device) overrides ``device`` and ``precision``;
    ``default`` weights are the published ones. A plugin's options go in ``settings.components``
    / ``refiner_settings.components`` by its name (its declared options dataclass)."""
    prompt_set = load_prompts(prompts) if isinstance(prompts, str) else prompts
    hub = _hub(device, precision, models)
    settings, refiner_settings = settings or LabelerSettings(), refiner_settings or RefinerSettings()
    # recorded with the labeler's and every refiner's options, defaults included
    settings = replace(settings, components=effective_options("labeler", (method,), settings.components))
    refiner_settings = replace(
        refiner_settings, components=effective_options("refiner", tuple(refine), refiner_settings.components)
    )
    scorer = create_labeler_scorer(method, hub, prompt_set, settings)
    refiners = create_refiners(tuple(refine), hub, refiner_settings)
    models_used = asdict(hub.settings)
    models_used.pop("device")  # where it ran does not change the outputs
    models_used["autocast_dtype"] = str(models_used["autocast_dtype"] or "fp32")
    recorded = {
        "method": method, "prompts": prompt_set.source, "classes": prompt_set.class_names, "refine": list(refine),
        "unsure_margin": unsure_margin, "max_side": max_side, "models": models_used,
        "labeler": asdict(settings), "refiners": asdict(refiner_settings),
    }  # fmt: skip
    function = ScoreRefineDecode(scorer, unsure_margin, refiners, max_side, hub.batch_preparer())
    return Labeler(function, prompt_set, plain(recorded, absolute_paths=True))


def create_refiner(
    name: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    models: ModelSettings | None = None,
    settings: RefinerSettings | None = None,
) -> Refiner:
    """A refiner from the registry: ``(rgb uint8 [H, W, 3], ScoreMaps, StageRecord) -> ScoreMaps``."""
    return create_refiners((name,), _hub(device, precision, models), settings or RefinerSettings())[0]


def open_dataset(name: str, root: str | os.PathLike[str], split: str | None = None, **options: Any) -> Dataset:
    """A dataset from :data:`~pseudolabel.registry.DATASETS` (``voc``, ``coco``, ``folder``);
    ``options``: ``prompts`` (a PromptSet; default VOC's, or a folder's / COCO file's own classes),
    ``labels_file``, ``gt_dir``, ``max_image_pixels``."""
    return DATASETS[name](Path(root), split, **options)


def run(
    labeler: Labeler,
    dataset: Dataset,
    out: str | os.PathLike[str],
    *,
    save_scores: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    shard: tuple[int, int] = (0, 1),
    num_workers: int = 0,
    batch_size: int = 1,
    engine: Engine | None = None,
) -> RunSummary:
    """Label a dataset split into ``out`` as ``generate`` does: palette PNGs, ``manifest.jsonl``,
    resume of finished images, optional saved scores; ``batch_size`` images share one SAM
    encoder pass; ``engine=RayEngine(...)`` labels on Ray actors (the labeler is sent to each).

    Like ``generate``, it records the settings in ``out`` (``.pseudolabel-settings.json``: a resume
    with another labeler is refused unless ``overwrite``) and writes them to ``config.yaml``, under
    ``python-api`` in the API's own terms (it documents the run; ``--config`` does not take it)."""
    if dataset.class_names != labeler.prompts.class_names:
        raise ConfigError("the dataset's classes differ from the labeler's prompt set; open both with the same prompts")
    scores_dir = Path(save_scores) if save_scores is not None else None
    options = RunOptions(Path(out), scores_dir, overwrite, limit, shard, num_workers, batch_size=batch_size)
    recorded = {**labeler.settings, "images": plain(dataset.image_root, absolute_paths=True)}
    check_and_record(Path(out), {"command": API_COMMAND, "options": recorded}, overwrite, {})
    write_config_document(Path(out) / "config.yaml", API_COMMAND, recorded)
    return run_images(dataset, lambda: labeler.image_function, options, engine=engine)

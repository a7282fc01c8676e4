"""Registries, the way ``segment_anything.sam_model_registry`` does it: name -> builder.

* ``LABELERS[name](hub, prompts, settings)`` -> a Scorer (Sample, StageRecord) -> ScoreMaps.
* ``REFINERS[name](hub, settings)`` -> a Refiner (rgb, ScoreMaps, StageRecord) -> ScoreMaps.
* ``DATASETS[name](root, split, prompts, labels_file, gt_dir, max_image_pixels)`` -> a Dataset.

A :class:`ModelHub` builds each model once per run on first use and shares it, so
``generate --method grounded-sam --refine sam`` holds one SAM. Adding a refiner is one entry
here (``--refine`` reads these keys); a labeler also needs its ``--method`` choice in
``cli/generate.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from pseudolabel.datasets import DATASET_NAMES, build_dataset
from pseudolabel.prompts import PromptSet
from pseudolabel.settings import LabelerSettings, ModelSettings, RefinerSettings
from pseudolabel.stages import Refiner, Scorer


class ModelHub:
    """Builds each model of a run once, on first use (random weights are drawn after ``seed``)."""

    def __init__(self, settings: ModelSettings | None = None) -> None:
        self.settings = settings or ModelSettings()
        self.device = torch.device(self.settings.device)
        self._built: dict[str, Any] = {}
        torch.manual_seed(self.settings.seed)

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def clip(self) -> Any:
        """The run's CLIP (``clip_model`` with ``clip_weights``)."""
        from pseudolabel.models.clip import build_clip

        settings = self.settings
        return self._once("clip", lambda: build_clip(settings.clip_model, settings.clip_weights, self.device))

    def clipn(self, weights: str) -> tuple[Any, Any]:
        """CLIPN's CLIP (image and "yes" text towers) and its "no" text tower."""
        from pseudolabel.models import clipn

        return self._once(f"clipn:{weights}", lambda: clipn.load_clipn(weights, self.device))

    def sam(self) -> Any:
        """The run's :class:`~pseudolabel.models.sam.SamPrompter`, shared by labeler and refiner."""
        from pseudolabel.models import sam

        settings = self.settings

        def build() -> Any:
            model = sam.build_sam(settings.sam, settings.sam_checkpoint, self.device)
            return sam.SamPrompter(model, settings.sam_batch, settings.autocast_dtype)

        return self._once("sam", build)

    def batch_preparer(self) -> Any:
        """What the built models do once per batch of images: SAM's image encoder over the batch
        when the run has built SAM, else None."""
        return self._built["sam"].embed_batch if "sam" in self._built else None

    def grounding_dino(self) -> Any:
        """The run's Grounding DINO (``detector`` with ``detector_weights``)."""
        from pseudolabel.models.grounding import build_grounding_dino

        settings = self.settings
        return self._once(
            "grounding", lambda: build_grounding_dino(settings.detector, settings.detector_weights, self.device)
        )


def _exclusion(hub: ModelHub, prompts: PromptSet, settings: LabelerSettings) -> tuple[Any, Any]:
    """(CLIP for the exclusion, exclusion) for a CLIPN checkpoint; (None, None) for plain CLIP,
    which the labeler builds itself on its own CLIP."""
    exclusion = settings.exclusion
    if not exclusion.enabled or exclusion.weights == "clip":
        return None, None
    from pseudolabel.exclusion import ClassExclusion

    clip, no_tower = hub.clipn(exclusion.weights)
    return clip, ClassExclusion(clip, prompts, exclusion.threshold, no_tower)


def build_cam_labeler(hub: ModelHub, prompts: PromptSet, settings: LabelerSettings) -> Scorer:
    """CLIP-ES CAMs on the run's CLIP; a CLIPN exclusion keeps its own CLIP."""
    from pseudolabel.labelers.cam import CamLabeler, CamLabelerOptions

    _, exclusion = _exclusion(hub, prompts, settings)
    options = CamLabelerOptions(settings.prompting, settings.background, settings.exclusion, settings.zero_shot)
    return CamLabeler(hub.clip(), prompts, settings.cam, options, hub.settings.autocast_dtype, exclusion)


def build_grounded_sam_labeler(hub: ModelHub, prompts: PromptSet, settings: LabelerSettings) -> Scorer:
    """Grounding DINO + SAM; CLIP only when zero-shot, POLE or exclusion need it."""
    from pseudolabel.labelers.grounded_sam import GroundedSamLabeler, GroundedSamOptions

    options = GroundedSamOptions(settings.detector, settings.prompting, settings.exclusion, settings.zero_shot)
    clip, exclusion = _exclusion(hub, prompts, settings)
    if clip is None and options.needs_clip:
        clip = hub.clip()
    detector = hub.grounding_dino()
    return GroundedSamLabeler(detector, hub.sam(), prompts, options, clip, exclusion, hub.settings.autocast_dtype)


def check_weights(settings: ModelSettings, models: list[str]) -> None:
    """Find, or download now, the checkpoint of each model a run will build (hub keys: ``clip``,
    ``sam``, ``grounding``, ``clipn:<weights>``), before any work; one WeightsError names every
    missing file. Random weights need none (their warning comes when the model is built)."""
    from pseudolabel.models.clip_weights import resolve_clip_weights
    from pseudolabel.models.grounding import detector_checkpoint
    from pseudolabel.models.sam import sam_checkpoint
    from pseudolabel.models.weights import RANDOM, check_all, resolve_weights

    locate = {
        "clip": (settings.clip_weights, lambda: resolve_clip_weights(settings.clip_model, settings.clip_weights)),
        "sam": (settings.sam_checkpoint, lambda: sam_checkpoint(settings.sam, settings.sam_checkpoint)),
        "grounding": (
            settings.detector_weights,
            lambda: detector_checkpoint(settings.detector, settings.detector_weights),
        ),
    }
    for model in models:
        if model.startswith("clipn:"):
            weights = model.removeprefix("clipn:")
            locate[model] = (weights, lambda weights=weights: resolve_weights(weights, "clipn"))
    check_all([locate[model][1] for model in dict.fromkeys(models) if locate[model][0] != RANDOM])


def labeler_models(method: str, settings: LabelerSettings) -> list[str]:
    """The hub models (:func:`check_weights` keys) the labeler ``method`` builds."""
    exclusion = settings.exclusion
    clipn = [f"clipn:{exclusion.weights}"] if exclusion.enabled and exclusion.weights != "clip" else []
    if method == "cam":
        return ["clip", *clipn]
    from pseudolabel.labelers.grounded_sam import GroundedSamOptions

    options = GroundedSamOptions(settings.detector, settings.prompting, settings.exclusion, settings.zero_shot)
    return ["grounding", "sam", *clipn, *(["clip"] if options.needs_clip and not clipn else [])]


def build_crf_refiner(hub: ModelHub, settings: RefinerSettings) -> Refiner:
    """DenseCRF (picklable: it can run in worker processes)."""
    from pseudolabel.refiners.crf import CrfRefiner

    return CrfRefiner(settings.crf, settings.min_confidence)


def build_sam_refiner(hub: ModelHub, settings: RefinerSettings) -> Refiner:
    """SAM point prompts (CEP) or automatic masks (SEPL) on the run's shared SAM."""
    from pseudolabel.refiners.sam import SamRefiner

    return SamRefiner(hub.sam(), settings.sam)


LABELERS: dict[str, Callable[[ModelHub, PromptSet, LabelerSettings], Scorer]] = {
    "cam": build_cam_labeler,
    "grounded-sam": build_grounded_sam_labeler,
}
REFINERS: dict[str, Callable[[ModelHub, RefinerSettings], Refiner]] = {
    "crf": build_crf_refiner,
    "sam": build_sam_refiner,
}
DATASETS: dict[str, Callable[..., Any]] = {name: partial(build_dataset, name) for name in DATASET_NAMES}
REFINER_MODELS: dict[str, tuple[str, ...]] = {"crf": (), "sam": ("sam",)}
"""The hub models each refiner builds."""
CPU_REFINERS = frozenset({"crf"})
"""Refiners that run on the CPU only and pickle, so ``refine`` runs them in worker processes."""


def refine_workers(names: tuple[str, ...], requested: int | None) -> tuple[int, bool]:
    """(worker processes, whether the refiners run inside them) for refining stored masks: a chain
    of CPU refiners runs in every core's process; one with a model (SAM) runs here, with 2
    processes decoding ahead. ``requested`` overrides the count."""
    on_cpu = set(names) <= CPU_REFINERS
    default = (os.cpu_count() or 1) if on_cpu else 2
    return (default if requested is None else requested), on_cpu


def parse_refiners(text: str | None) -> tuple[str, ...]:
    """``"crf,sam"`` -> ("crf", "sam"), in order; each must be in :data:`REFINERS`."""
    from pseudolabel.errors import ConfigError

    names = tuple(part.strip() for part in (text or "").split(",") if part.strip())
    unknown = [name for name in names if name not in REFINERS]
    if unknown:
        raise ConfigError(f"unknown refiner {unknown[0]!r}; choose from {', '.join(REFINERS)} (comma-separated)")
    return names


def run_models(method: str | None, labeler: LabelerSettings | None, refiners: tuple[str, ...]) -> list[str]:
    """Every hub model a run builds: its labeler's (when it labels) and its refiners'."""
    models = labeler_models(method, labeler) if method is not None and labeler is not None else []
    return models + [model for name in refiners for model in REFINER_MODELS.get(name, ())]


def create_refiners(names: tuple[str, ...], hub: ModelHub, settings: RefinerSettings) -> list[Refiner]:
    """The refiners ``names`` in order, built from the registry."""
    return [REFINERS[name](hub, settings) for name in names]

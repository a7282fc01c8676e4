"""Building a run's components and models: the :class:`ModelHub`, the weights check before a run,
and the labeler and refiners by name from :mod:`pseudolabel.core.components`' registries.

* labeler ``name`` -> a Scorer (Sample, StageRecord) -> ScoreMaps.
* refiner ``name`` -> a Refiner (rgb, ScoreMaps, StageRecord) -> ScoreMaps.
* ``DATASETS[name](root, split, prompts, labels_file, gt_dir, max_image_pixels)`` -> a Dataset.

A :class:`ModelHub` builds each model once per run on first use and shares it, so
``generate --method grounded-sam --refine sam`` holds one SAM. A component registers itself
with its declaration (see :mod:`pseudolabel.core.components`); nothing here names one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from pseudolabel.core.components import Component, component, registry
from pseudolabel.core.prompts import PromptSet
from pseudolabel.datasets import build_dataset
from pseudolabel.models.image_encodings import CachedImageEncoder
from pseudolabel.runner.per_image import Refiner, Scorer
from pseudolabel.settings import LabelerSettings, ModelSettings, RefinerSettings


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

    def clip_es_cam(self, options: Any) -> Any:
        """The run's CLIP-ES view encoder for these :class:`~pseudolabel.labelers.options.CamOptions`
        (:class:`~pseudolabel.labelers.clip_es.ClipEsCam` on :meth:`clip`)."""
        from pseudolabel.labelers.clip_es import ClipEsCam

        return self._once(f"clip_es:{options!r}", lambda: ClipEsCam(self.clip(), options, self.settings.autocast_dtype))

    def clipn(self, weights: str) -> tuple[Any, Any]:
        """CLIPN's CLIP (image and "yes" text towers) and its "no" text tower."""
        from pseudolabel.models import clipn

        return self._once(f"clipn:{weights}", lambda: clipn.load_clipn(weights, self.device))

    def sam(self) -> Any:
        """The run's SAM (``settings.sam``, a registered SAM model) as a prompter shared by
        labeler and refiner (:class:`~pseudolabel.models.sam.SamPrompter`'s contract)."""
        settings = self.settings
        declared = component("sam", settings.sam)
        options = _options(declared, settings.components)

        def build() -> Any:
            prompter = declared.load()(settings.sam, settings, self.device, options)
            if settings.compile_sam:
                prompter.compile_image_encoder()
            return prompter

        return self._once("sam", build)

    def sam3(self) -> Any:
        """The run's SAM 3 (``sam3_model`` with ``sam3_checkpoint``) as a
        :class:`~pseudolabel.models.sam3.ConceptSegmenter`."""
        from pseudolabel.models.sam3 import concept_segmenter

        return self._once("sam3", lambda: concept_segmenter(self.settings, self.device))

    def batch_preparer(self) -> Any:
        """What the built models do once per batch of images: the image encoders the run has built
        (SAM, SAM 3, CLIP-ES's views: each one's ``embed_batch``) over the batch; None when it
        built none."""
        encoders = [built.embed_batch for built in self._built.values() if isinstance(built, CachedImageEncoder)]
        if not encoders:
            return None
        return encoders[0] if len(encoders) == 1 else partial(_each, encoders)

    def grounding_dino(self) -> Any:
        """The run's detector: a registered one by ``settings.detector``, else the detector that
        config file describes (Grounding DINO, MM-Grounding-DINO or OWLv2)."""
        from pseudolabel.models.grounding import build_detector

        settings = self.settings
        declared = registered_detector(settings)
        if declared is not None:
            options = _options(declared, settings.components)
            return self._once("grounding", lambda: declared.load()(settings.detector, settings, self.device, options))
        return self._once(
            "grounding",
            lambda: build_detector(settings.detector, settings.detector_weights, self.device, settings.autocast_dtype),
        )


def _each(functions: list[Callable[[Any], None]], images: Any) -> None:
    for function in functions:
        function(images)


def registered_detector(settings: ModelSettings) -> Component | None:
    """The registered detector ``settings.detector`` names; None for a Grounding DINO config file."""
    return registry("detector").get(settings.detector)


def check_weights(settings: ModelSettings, models: list[str]) -> None:
    """Find, or download now, the checkpoint of each model a run will build (hub keys: ``clip``,
    ``sam``, ``grounding``, ``sam3``, ``clipn:<weights>``), before any work; one WeightsError names every
    missing file. Random weights need none (their warning comes when the model is built)."""
    from pseudolabel.models.clip_weights import resolve_clip_weights
    from pseudolabel.models.grounding import detector_checkpoint
    from pseudolabel.models.sam3 import sam3_checkpoint
    from pseudolabel.models.weights import RANDOM, check_all, resolve_weights

    locate = {
        "clip": (settings.clip_weights, lambda: resolve_clip_weights(settings.clip_model, settings.clip_weights)),
        "sam": (
            settings.sam_checkpoint,
            lambda: component("sam", settings.sam).locate_weights(settings.sam_checkpoint),
        ),
        "grounding": (
            settings.detector_weights,
            lambda: (
                detector.locate_weights(settings.detector_weights)
                if (detector := registered_detector(settings)) is not None
                else detector_checkpoint(settings.detector, settings.detector_weights)
            ),
        ),
        "sam3": (settings.sam3_checkpoint, lambda: sam3_checkpoint(settings.sam3_model, settings.sam3_checkpoint)),
    }
    for model in models:
        if model.startswith("clipn:"):
            weights = model.removeprefix("clipn:")
            locate[model] = (weights, lambda weights=weights: resolve_weights(weights, "clipn"))
    check_all([locate[model][1] for model in dict.fromkeys(models) if locate[model][0] != RANDOM])


def labeler_models(method: str, settings: LabelerSettings) -> list[str]:
    """The hub models (:func:`check_weights` keys) the labeler ``method`` builds: its own, a
    CLIPN checkpoint for the exclusion, and CLIP when zero-shot, POLE or exclusion need one."""
    exclusion = settings.exclusion
    own = component("labeler", method).models
    clipn = [f"clipn:{exclusion.weights}"] if exclusion.enabled and exclusion.weights != "clip" else []
    needs_clip = settings.zero_shot.enabled or settings.prompting.synonyms == "pole" or exclusion.enabled
    return [*own, *clipn, *(["clip"] if needs_clip and not clipn and "clip" not in own else [])]


def create_labeler_scorer(method: str, hub: ModelHub, prompts: PromptSet, settings: LabelerSettings) -> Scorer:
    """The labeler ``method`` from the registry, with its options (a plugin's from ``settings``)."""
    declared = component("labeler", method)
    return declared.load()(hub, prompts, settings, _options(declared, settings.components))


def effective_options(kind: str, names: tuple[str, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Each of the ``kind`` components ``names`` that has options -> the options it runs with
    (given, else its defaults): what a run records."""
    chosen = {name: _options(component(kind, name), given) for name in names}
    return {name: options for name, options in chosen.items() if options is not None}


def _options(declared: Component, given: dict[str, Any]) -> Any:
    """A component's options: those given by its name, else its defaults (None: it has none)."""
    return given[declared.name] if declared.name in given else declared.defaults()


DATASETS: dict[str, Callable[..., Any]] = {name: partial(build_dataset, name) for name in registry("dataset")}


def refine_workers(names: tuple[str, ...], requested: int | None) -> tuple[int, bool]:
    """(worker processes, whether the refiners run inside them) for refining stored masks: a chain
    of CPU refiners runs in every core's process; one with a model (SAM) runs here, with 2
    processes decoding ahead. ``requested`` overrides the count."""
    on_cpu = all(component("refiner", name).cpu_only for name in names)
    default = (os.cpu_count() or 1) if on_cpu else 2
    return (default if requested is None else requested), on_cpu


def parse_refiners(text: str | None) -> tuple[str, ...]:
    """``"crf,sam"`` -> ("crf", "sam"), in order; each must be a registered refiner."""
    from pseudolabel.core.errors import ConfigError

    names = tuple(part.strip() for part in (text or "").split(",") if part.strip())
    known = registry("refiner")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"unknown refiner {unknown[0]!r}; choose from {', '.join(known)} (comma-separated)")
    return names


def run_models(method: str | None, labeler: LabelerSettings | None, refiners: tuple[str, ...]) -> list[str]:
    """Every hub model a run builds: its labeler's (when it labels) and its refiners'."""
    models = labeler_models(method, labeler) if method is not None and labeler is not None else []
    return models + [model for name in refiners for model in component("refiner", name).models]


def create_refiners(names: tuple[str, ...], hub: ModelHub | None, settings: RefinerSettings) -> list[Refiner]:
    """The refiners ``names`` in order, built from the registry with their options (``hub``: None
    when none of them builds a model)."""
    built = []
    for name in names:
        declared = component("refiner", name)
        built.append(declared.load()(hub, settings, _options(declared, settings.components)))
    return built

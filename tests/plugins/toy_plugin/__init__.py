"""A pseudolabel plugin as a user would write one, for tests/test_plugins.py: a labeler and a
refiner with one option each, registered through entry points (``toy_plugin-0.1.dist-info``)
and nothing else. Declarations import without torch; the builders are plain functions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pseudolabel.core.components import Component, option
from pseudolabel.core.scoremaps import ScoreMaps


@dataclass(frozen=True)
class StripesOptions:
    """The stripes labeler's options."""

    stripes: int = option(2, "Vertical stripes per image, each one of its classes in turn.")


@dataclass(frozen=True)
class FrameOptions:
    """The frame refiner's options."""

    frame_width: int = option(1, "Pixels along each edge marked unsure.")


STRIPES = Component(
    "labeler", "stripes", "Vertical stripes, one class each (a test labeler).", "toy_plugin:build_stripes",
    options=StripesOptions,
)  # fmt: skip
FRAME = Component(
    "refiner", "frame", "Marks a frame along the image edges unsure (a test refiner).", "toy_plugin:build_frame",
    options=FrameOptions, cpu_only=True,
)  # fmt: skip


def build_stripes(hub, prompts, settings, options: StripesOptions):
    """Stripe i of ``options.stripes`` (equal widths) scores the image's class i mod K highest."""

    def score(sample, record):
        height, width = sample.rgb.shape[:2]
        classes = (0, *sample.classes)
        scores = np.full((len(classes), height, width), 0.1, np.float32)
        stripe = (np.arange(width) * options.stripes) // width
        for index in range(options.stripes):
            channel = 1 + index % max(1, len(classes) - 1)
            scores[channel][:, stripe == index] = 0.9
        record["stripes"] = options.stripes
        return ScoreMaps(scores, classes)

    return score


def build_frame(hub, settings, options: FrameOptions):
    """A refiner marking ``options.frame_width`` pixels along each edge unsure."""

    def refine(rgb, maps, record):
        unsure = np.zeros(maps.scores.shape[1:], bool) if maps.unsure is None else maps.unsure.copy()
        width = options.frame_width
        unsure[:width], unsure[-width:], unsure[:, :width], unsure[:, -width:] = True, True, True, True
        record["frame_width"] = width
        return ScoreMaps(maps.scores, maps.class_ids, unsure)

    return refine

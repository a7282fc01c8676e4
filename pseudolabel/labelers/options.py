"""Labeler options: those both labelers share (how class names become prompts, the ELSE-style
exclusion, zero-shot candidates), the CAM views (CamOptions) and the detector (DetectorOptions).
Each default is written here once; the command line reads it from these classes (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass

from pseudolabel.core.components import Component, option
from pseudolabel.core.errors import ConfigError

DEFAULT_POLE_CANDIDATES = 4
DEFAULT_EXCLUSION_THRESHOLD = 0.2
CAPTION_MODES = ("joint", "per-class")
SYNONYM_MODES = ("none", "fuse", "detector", "pole")
"""``none`` class name, ``fuse`` CLIP-ES fused names, ``detector`` the prompt file's detector
names (Grounded-SAM only), ``pole`` a per-image choice among the class name and its synonyms."""


@dataclass(frozen=True)
class PromptingOptions:
    """How class names become prompts.

    Attributes:
        synonyms: one of :data:`SYNONYM_MODES`; None means the labeler's default (``fuse`` for
            CAMs, ``none`` for Grounded-SAM).
        pole_candidates: names per class POLE chooses among (class name included).
    """

    synonyms: str | None = None
    pole_candidates: int = DEFAULT_POLE_CANDIDATES

    def resolved(self, default: str, allowed: tuple[str, ...]) -> str:
        """The synonym mode, ``default`` when unset; ConfigError when the labeler does not know it."""
        mode = self.synonyms or default
        if mode not in allowed:
            if mode == "detector":
                raise ConfigError("--synonyms detector names Grounding DINO captions; it needs --method grounded-sam")
            raise ConfigError(f"--synonyms must be one of {', '.join(allowed)}, got {mode!r}")
        return mode


@dataclass(frozen=True)
class ExclusionOptions:
    """ELSE-style exclusion of classes impossible in a region.

    Attributes:
        enabled: run it.
        threshold: a (region, class) pair is impossible when P_ex is above this.
        weights: ``clip`` (reverse prompts on the labeler's CLIP) or a CLIPN checkpoint.
    """

    enabled: bool = False
    threshold: float = DEFAULT_EXCLUSION_THRESHOLD
    weights: str = "clip"


@dataclass(frozen=True)
class ZeroShotOptions:
    """Candidates from CLIP instead of image labels.

    Attributes:
        enabled: ignore image labels (``--labels none``).
        top_k: candidate classes per image.
        min_probability: keep candidates with CLIP probability above this.
    """

    enabled: bool = False
    top_k: int = 3
    min_probability: float = 0.1


def parse_scales(text: str, flag: str = "--scales") -> tuple[float, ...]:
    """``"1.0,0.75"`` -> (1.0, 0.75); positive numbers only."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ConfigError(f"{flag} must be comma-separated numbers, got {text!r}") from error
    if not scales or any(scale <= 0 for scale in scales):
        raise ConfigError(f"{flag} must be positive numbers, got {text!r}")
    return scales


def show_scales(scales: tuple[float, ...]) -> str:
    """(1.0, 0.75) -> ``"1.0,0.75"``."""
    return ",".join(map(str, scales))


@dataclass(frozen=True)
class CamOptions:
    """CAM settings.

    Attributes:
        scales: image scales, each view resized to a multiple of the patch size.
        flip: add a horizontally flipped view per scale.
        caa: refine with class-aware attention affinity.
        caa_threshold: CAA keeps affinities into boxes around CAM regions above this share of the max.
        attention_layers: last blocks whose attention forms the affinity.
        bg_alpha: background = (1 - max CAM) ** bg_alpha (CLIP-ES: 1).
        bg_threshold: if set, a constant background score instead (a pixel is foreground where
            its best CAM exceeds it).
    """

    scales: tuple[float, ...] = option(
        (1.0,), "Image scales, e.g. 1.0,0.75,1.25.", parse=parse_scales, show=show_scales
    )
    flip: bool = option(False, "Add a flipped view per scale.")
    caa: bool = option(True, "Class-aware attention affinity.")
    caa_threshold: float = option(0.4, "CAA box threshold (share of max).")
    attention_layers: int = option(8, "Last blocks whose attention forms the affinity.", flag="")
    bg_alpha: float = option(1.0, "Background = (1 - max CAM) ** alpha.")
    bg_threshold: float | None = option(None, "Constant background score instead.")


@dataclass(frozen=True)
class DetectorOptions:
    """Grounding DINO thresholds and caption mode.

    Attributes:
        box_threshold: keep a query whose best probability is above this (0.3).
        text_threshold: ``joint`` captions: a kept query detects every class above this (0.25).
        nms_threshold: per-class NMS IoU (1 keeps every box).
        captions: ``joint`` (one caption for all classes) or ``per-class`` (one pass per class).
        max_detections: keep at most this many boxes per image, best score first, after NMS
            (0: no cap; the published code has none).
    """

    box_threshold: float = option(0.3, "Keep boxes above this.")
    text_threshold: float = option(0.25, "Joint: class tokens above this.")
    nms_threshold: float = option(0.7, "Per-class NMS IoU (1: keep all).")
    captions: str = option("joint", "joint (one pass) or per-class (SAM_WSSS).", choices=CAPTION_MODES)
    max_detections: int = option(100, "Boxes kept per image, best first (0: all).")


ZERO_SHOT_SOURCES = ("clip", "presence")


@dataclass(frozen=True)
class Sam3Options:
    """SAM 3's thresholds (0.5 and 0.5: Meta's ``Sam3Processor``'s ``confidence_threshold`` and mask
    cut) and where zero-shot candidates come from (``clip`` or SAM 3's ``presence`` score)."""

    concept_threshold: float = option(0.5, "Keep instances whose score x presence is above this.")
    mask_threshold: float = option(0.5, "A pixel is in a mask where its sigmoid is above this.")
    zero_shot_from: str = option(
        "clip", "--labels none: candidates by CLIP or by SAM 3's presence score.", choices=ZERO_SHOT_SOURCES
    )
    presence_threshold: float = option(0.5, "--zero-shot-from presence: a class is a candidate above this.")


CAM = Component(
    "labeler", "cam", "CLIP-ES class activation maps (CLIP ViT), with CAA.",
    "pseudolabel.labelers.cam:build", options=CamOptions, models=("clip",),
)  # fmt: skip
GROUNDED_SAM = Component(
    "labeler", "grounded-sam", "Grounding DINO boxes prompting SAM masks.",
    "pseudolabel.labelers.grounded_sam:build", options=DetectorOptions, models=("grounding", "sam"),
)  # fmt: skip
SAM3 = Component(
    "labeler", "sam3", "SAM 3 concept segmentation of each class name (Meta).",
    "pseudolabel.labelers.sam3:build", options=Sam3Options, models=("sam3",),
)  # fmt: skip

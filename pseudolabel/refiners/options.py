"""The refiner declarations and their options, importable without torch (the command line reads
choices and defaults here; a builder is imported only when a run builds its refiner)."""

from __future__ import annotations

from dataclasses import dataclass

from pseudolabel.core.components import Component
from pseudolabel.core.scoremaps import DEFAULT_LABEL_CONFIDENCE

SAM_MODES = ("points", "auto")


@dataclass(frozen=True)
class CrfOptions:
    """DenseCRF settings.

    Attributes:
        iterations: mean-field iterations.
        gaussian_sxy, gaussian_compat: smoothness kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel.
    """

    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0


@dataclass(frozen=True)
class SamRefineOptions:
    """SAM refinement settings (CEP and SEPL defaults); ``label_confidence``: scores of a repainted pixel."""

    mode: str = "points"
    grid: int = 16
    iou_threshold: float = 0.5
    inside_share: float = 0.5
    region_cover: float = 0.85
    label_confidence: float = DEFAULT_LABEL_CONFIDENCE


CRF = Component(
    "refiner", "crf", "DenseCRF (Kraehenbuehl and Koltun) on the image and the scores.",
    "pseudolabel.refiners.crf:build", cpu_only=True,
)  # fmt: skip
SAM = Component(
    "refiner", "sam", "SAM: point prompts per region (CEP) or automatic masks voted by class (SEPL).",
    "pseudolabel.refiners.sam:build", models=("sam",),
)  # fmt: skip

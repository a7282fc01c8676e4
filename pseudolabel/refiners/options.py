"""The refiner declarations and their options, importable without torch (the command line reads
choices and defaults here; a builder is imported only when a run builds its refiner)."""

from __future__ import annotations

from dataclasses import dataclass

from pseudolabel.core.components import Component, option
from pseudolabel.core.scoremaps import DEFAULT_LABEL_CONFIDENCE

SAM_MODES = ("points", "auto")


@dataclass(frozen=True)
class CrfOptions:
    """DenseCRF settings.

    Attributes:
        iterations: mean-field iterations.
        gaussian_sxy, gaussian_compat: smoothness kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel.
        min_confidence: pixels whose best marginal is below it become unsure (CLIP-ES: 0.95).
    """

    iterations: int = option(10, "CRF mean-field iterations.", flag="crf-iterations")
    gaussian_sxy: float = option(1.0, "Smoothness kernel width.", flag="")
    gaussian_compat: float = option(3.0, "Smoothness kernel weight.", flag="")
    bilateral_sxy: float = option(67.0, "Appearance kernel width (pixels).", flag="")
    bilateral_srgb: float = option(3.0, "Appearance kernel width (colour).", flag="")
    bilateral_compat: float = option(4.0, "Appearance kernel weight.", flag="")
    min_confidence: float | None = option(None, "CRF: 255 below this probability (CLIP-ES 0.95).")


@dataclass(frozen=True)
class SamRefineOptions:
    """SAM refinement settings (CEP and SEPL defaults); ``label_confidence``: scores of a
    repainted pixel (the run's ``--label-confidence``)."""

    mode: str = option("points", "points (CEP) or auto (SEPL).", flag="sam-mode", choices=SAM_MODES)
    grid: int = option(16, "SAM points: N x N grid.")
    iou_threshold: float = option(0.5, "SAM points: keep masks with region IoU >= this.")
    inside_share: float = option(0.5, "SAM points: share of a mask inside its region.", flag="")
    region_cover: float = option(0.85, "SEPL: share of a mask one class must cover.", flag="")
    label_confidence: float = option(DEFAULT_LABEL_CONFIDENCE, "Score of a repainted pixel.", flag="")


CRF = Component(
    "refiner", "crf", "DenseCRF (Kraehenbuehl and Koltun) on the image and the scores.",
    "pseudolabel.refiners.crf:build", options=CrfOptions, cpu_only=True,
)  # fmt: skip
SAM = Component(
    "refiner", "sam", "SAM: point prompts per region (CEP) or automatic masks voted by class (SEPL).",
    "pseudolabel.refiners.sam:build", options=SamRefineOptions, models=("sam",),
)  # fmt: skip

"""Refiner options, importable without torch (the command line reads its defaults here)."""

from __future__ import annotations

from dataclasses import dataclass

from pseudolabel.scoremaps import DEFAULT_LABEL_CONFIDENCE

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

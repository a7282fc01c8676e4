"""DenseCRF refinement (Krähenbühl & Koltun) through the maintained ``pydensecrf2`` binding.

Defaults are those of DeepLab / CLIP-ES: 10 mean-field iterations, a Gaussian pairwise term
(sxy 1, compat 3) and a bilateral one (sxy 67, srgb 3, compat 4) on the raw RGB uint8 image.
The unary is -log(score) per channel; scores need not sum to one (a per-pixel constant does
not change the result).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from pseudolabel.core.scoremaps import ScoreMaps, mark_unsure
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.refiners.options import CrfOptions

if TYPE_CHECKING:
    from pseudolabel.settings import RefinerSettings

PROBABILITY_FLOOR = 1e-5


def crf_refine(rgb: np.ndarray, maps: ScoreMaps, options: CrfOptions | None = None) -> ScoreMaps:
    """Run DenseCRF on an image and its scores.

    Args:
        rgb: uint8 [H, W, 3], the raw image (not mean-subtracted).
        maps: scores [C, H, W] at the image's size.

    Returns:
        ScoreMaps with the CRF's marginal probabilities float32 [C, H, W].
    """
    import pydensecrf.densecrf as densecrf

    options = options or CrfOptions()
    count, height, width = maps.scores.shape
    if rgb.shape[:2] != (height, width):
        raise ValueError(f"image {rgb.shape[:2]} and scores {(height, width)} differ in size")
    if count < 2:
        return maps
    crf = densecrf.DenseCRF2D(width, height, count)
    unary = -np.log(np.clip(maps.scores, PROBABILITY_FLOOR, None)).reshape(count, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=options.gaussian_sxy, compat=options.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=options.bilateral_sxy,
        srgb=options.bilateral_srgb,
        rgbim=np.ascontiguousarray(rgb, dtype=np.uint8),
        compat=options.bilateral_compat,
    )
    marginals = np.asarray(crf.inference(options.iterations), dtype=np.float32).reshape(count, height, width)
    return ScoreMaps(marginals, maps.class_ids)


@dataclass(frozen=True)
class CrfRefiner:
    """Refiner stage: DenseCRF marginals from the scores (the input's unsure pixels play no part);
    ``options.min_confidence`` marks pixels whose best marginal is below it unsure.

    CLIP-ES uses ``min_confidence=0.95``. Small and picklable, so it can run in worker processes.
    """

    options: CrfOptions = field(default_factory=CrfOptions)

    def __call__(self, rgb: np.ndarray, maps: ScoreMaps, record: StageRecord) -> ScoreMaps:
        """Refined scores of uint8 [H, W, 3] ``rgb``; records ``crf_s``."""
        with record.timed("crf_s"):
            refined = crf_refine(rgb, replace(maps, unsure=None), self.options)
            return mark_unsure(replace(refined, unsure=None), min_score=self.options.min_confidence)


def build(hub: object, settings: RefinerSettings, options: CrfOptions) -> CrfRefiner:
    """DenseCRF with its options (picklable: it can run in worker processes)."""
    return CrfRefiner(options)

"""DenseCRF refinement (Krähenbühl & Koltun) through the maintained ``pydensecrf2`` binding.

Defaults are those of DeepLab / CLIP-ES: 10 mean-field iterations, a Gaussian pairwise term
(sxy 1, compat 3) and a bilateral one (sxy 67, srgb 3, compat 4) on the raw RGB uint8 image.
The unary is -log(score) per channel; scores need not sum to one (a per-pixel constant does
not change the result).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pseudolabel.masks import IGNORE_INDEX
from pseudolabel.scoremaps import ScoreMaps, decode

PROBABILITY_FLOOR = 1e-5


@dataclass(frozen=True)
class CrfOptions:
    """DenseCRF settings.

    Attributes:
        iterations: mean-field iterations.
        gaussian_sxy, gaussian_compat: smoothness kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel.
        label_confidence: probability given to a hard label's class when the input is a mask
            (the rest is shared by the other classes; 255 pixels get a uniform distribution).
    """

    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    label_confidence: float = 0.7


def scores_from_labels(labels: np.ndarray, class_ids: tuple[int, ...], confidence: float) -> ScoreMaps:
    """Soft scores from a hard label map.

    Args:
        labels: uint8 [H, W] class ids, 255 = unknown.
        class_ids: the channels, background first; every non-255 label must be among them.
        confidence: probability of the labelled class; 255 pixels are uniform.

    Returns:
        ScoreMaps with float32 [C, H, W] summing to 1 per pixel.
    """
    count = len(class_ids)
    other = (1.0 - confidence) / max(count - 1, 1)
    scores = np.full((count, *labels.shape), other, dtype=np.float32)
    for channel, class_id in enumerate(class_ids):
        scores[channel][labels == class_id] = confidence
    scores[:, labels == IGNORE_INDEX] = 1.0 / count
    return ScoreMaps(scores, class_ids)


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
    """Refiner stage: DenseCRF on the scores, then argmax; ``min_confidence`` marks less sure pixels 255.

    CLIP-ES uses ``min_confidence=0.95``. Small and picklable, so it can run in worker processes.
    """

    options: CrfOptions = CrfOptions()
    min_confidence: float | None = None

    def __call__(self, rgb: np.ndarray, maps: ScoreMaps, labels: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Refined uint8 [H, W] labels and the stage's manifest fields (``labels`` is unused)."""
        start = time.perf_counter()
        refined = decode(crf_refine(rgb, maps, self.options), min_score=self.min_confidence)
        return refined, {"crf_s": round(time.perf_counter() - start, 4)}

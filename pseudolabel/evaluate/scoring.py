"""Score a folder of predicted masks against ground truth, in parallel over CPU cores."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.core.errors import ConfigError, listed
from pseudolabel.core.masks import IGNORE_INDEX, read_mask
from pseudolabel.datasets import Dataset
from pseudolabel.evaluate.metrics import Counts, count_pair, summarize

CHUNK_SIZE = 32
IN_PROCESS_LIMIT = 64
"""Below this many pairs, scoring runs in the calling process (no pool start-up cost)."""


@dataclass(frozen=True)
class Pair:
    """One image to score: its GT mask and its prediction (None: missing, counted as all 255)."""

    name: str
    gt: Path
    pred: Path | None


@dataclass(frozen=True)
class PairSet:
    """What to score, and what was left over while pairing."""

    pairs: list[Pair]
    missing: list[str]
    extra_predictions: int
    without_gt: int


def mask_files(folder: Path) -> dict[str, Path]:
    """PNG masks under ``folder`` by id (relative path without ``.png``); hidden files skipped."""
    if not folder.is_dir():
        raise ConfigError(f"mask folder {folder} does not exist")
    found = {}
    for path in sorted(folder.rglob("*.png")):
        relative = path.relative_to(folder)
        if not any(part.startswith(".") for part in relative.parts):
            found[relative.with_suffix("").as_posix()] = path
    return found


def pair_with_folder(pred_dir: Path, gt_dir: Path, allow_missing: bool = False) -> PairSet:
    """Pair every GT mask in ``gt_dir`` with the prediction of the same id in ``pred_dir``."""
    gt_files = mask_files(gt_dir)
    if not gt_files:
        raise ConfigError(f"no GT masks (*.png) in {gt_dir}")
    return _pair(pred_dir, gt_files, 0, allow_missing)


def pair_with_dataset(pred_dir: Path, dataset: Dataset, allow_missing: bool = False) -> PairSet:
    """Pair every image of a dataset split that has a GT mask with its prediction (GT rendered
    first where the dataset renders it, as COCO does)."""
    dataset.prepare_gt()
    gt_files = {}
    without_gt = 0
    for image_id in dataset.ids():
        gt = dataset.gt_path(image_id)
        if gt is None:
            without_gt += 1
        else:
            gt_files[image_id] = gt
    if not gt_files:
        raise ConfigError(f"none of the {without_gt} images of the split has a GT mask to score against")
    return _pair(pred_dir, gt_files, without_gt, allow_missing)


def _pair(pred_dir: Path, gt_files: dict[str, Path], without_gt: int, allow_missing: bool) -> PairSet:
    predictions = mask_files(pred_dir)
    missing = [name for name in gt_files if name not in predictions]
    if missing and not allow_missing:
        raise ConfigError(
            f"{len(missing)} of {len(gt_files)} predictions are missing in {pred_dir}: {listed(missing)} "
            "(--allow-missing counts them as all-unsure)"
        )
    pairs = [Pair(name, gt, predictions.get(name)) for name, gt in gt_files.items()]
    extra = len(set(predictions) - set(gt_files))
    return PairSet(pairs, missing, extra, without_gt)


@dataclass(frozen=True)
class ImageScore:
    """One image's figures over its own GT classes (fractions in [0, 1]; None = undefined).

    Attributes:
        iou: per class id; None for classes absent from the image's GT.
    """

    image_id: str
    miou: float | None
    mbiou: float | None
    coverage: float | None
    pixel_accuracy: float | None
    iou: list[float | None]


def image_score(image_id: str, counts: Counts) -> ImageScore:
    """The per-image row of one image's counts."""
    figures = summarize(counts)
    return ImageScore(
        image_id, figures["miou"], figures["mbiou"], figures["coverage"], figures["pixel_accuracy"], figures["iou"]
    )


def count_pairs(
    pairs: Sequence[Pair], num_classes: int, boundary_kernel: int | None = None
) -> tuple[Counts, list[ImageScore]]:
    """The summed counts of ``pairs`` and each image's scores, in this process (``boundary_kernel``
    as in ``count_pair``)."""
    total = Counts(num_classes)
    rows = []
    for pair in pairs:
        gt = read_mask(pair.gt)
        pred = read_mask(pair.pred) if pair.pred is not None else np.full_like(gt, IGNORE_INDEX)
        name = pair.pred.name if pair.pred else pair.name
        counts = count_pair(gt, pred, num_classes, name, boundary_kernel)
        total.add(counts)
        rows.append(image_score(pair.name, counts))
    return total, rows


def score_pairs(
    pairs: Sequence[Pair],
    num_classes: int,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    boundary_kernel: int | None = None,
) -> tuple[Counts, list[ImageScore]]:
    """Counts over all pairs and each image's scores (in pair order), split into chunks over
    ``workers`` processes (default: all cores). ``on_progress(n)`` is called as each chunk of n
    pairs is done.
    """
    workers = workers or os.cpu_count() or 1
    chunks = [list(pairs[start : start + CHUNK_SIZE]) for start in range(0, len(pairs), CHUNK_SIZE)]
    total = Counts(num_classes)
    rows: dict[int, list[ImageScore]] = {}
    if workers == 1 or len(pairs) < IN_PROCESS_LIMIT:
        for index, chunk in enumerate(chunks):
            counts, rows[index] = count_pairs(chunk, num_classes, boundary_kernel)
            total.add(counts)
            if on_progress:
                on_progress(len(chunk))
        return total, [row for index in sorted(rows) for row in rows[index]]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        futures = {pool.submit(count_pairs, chunk, num_classes, boundary_kernel): i for i, chunk in enumerate(chunks)}
        try:
            for future in as_completed(futures):
                counts, rows[futures[future]] = future.result()
                total.add(counts)
                if on_progress:
                    on_progress(len(chunks[futures[future]]))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return total, [row for index in sorted(rows) for row in rows[index]]

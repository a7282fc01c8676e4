"""Score results as a Rich table, a JSON file and a per-class CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from pseudolabel.core.files import atomic_write_text
from pseudolabel.evaluate.metrics import CONVENTIONS, Counts, summarize
from pseudolabel.evaluate.scoring import ImageScore, PairSet

PER_CLASS_KEYS = ("iou", "iou_confident", "biou", "precision", "recall")


def score_summary(
    counts: Counts, class_names: list[str], pair_set: PairSet, boundary_kernel: int | None = None
) -> dict[str, Any]:
    """The JSON report: top-level figures, per-class lists (by class id), bookkeeping, conventions."""
    report = summarize(counts)
    report.update(
        class_names=class_names,
        num_images=len(pair_set.pairs),
        num_missing_predictions=len(pair_set.missing),
        missing_predictions=pair_set.missing,
        num_extra_predictions=pair_set.extra_predictions,
        num_images_without_gt=pair_set.without_gt,
        boundary_kernel=boundary_kernel,
        conventions=CONVENTIONS,
    )
    return report


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals; ``-`` when undefined."""
    return "-" if value is None else f"{100 * value:.2f}"


def report_table(report: dict[str, Any]) -> Table:
    """Per-class table in percent, classes without GT or prediction left out."""
    table = Table(title=f"pseudo-label scores over {report['num_images']} images (%)")
    table.add_column("id", justify="right")
    table.add_column("class")
    for heading in ("IoU", "IoU conf.", "BIoU", "precision", "recall"):
        table.add_column(heading, justify="right")
    table.add_column("GT pixels", justify="right")
    for class_id, name in enumerate(report["class_names"]):
        if report["gt_pixels"][class_id] == 0 and report["pred_pixels"][class_id] == 0:
            continue
        table.add_row(
            str(class_id),
            name,
            *(percent(report[key][class_id]) for key in PER_CLASS_KEYS),
            f"{report['gt_pixels'][class_id]:,}",
        )
    table.add_section()
    table.add_row(
        "", "mean", percent(report["miou"]), percent(report["miou_confident"]), percent(report["mbiou"]), "", "", ""
    )
    return table


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The headline figures, one per line."""
    lines = [
        f"mIoU {percent(report['miou'])}  (unsure pixels counted as misses; mean over classes with GT)",
        f"mIoU on confident pixels {percent(report['miou_confident'])}  coverage {percent(report['coverage'])}",
        f"mBIoU {percent(report['mbiou'])}  pixel accuracy {percent(report['pixel_accuracy'])}",
    ]
    if report["num_missing_predictions"]:
        lines.append(f"{report['num_missing_predictions']} missing predictions counted as all-unsure")
    if report["num_extra_predictions"]:
        lines.append(f"{report['num_extra_predictions']} predictions without GT were not scored")
    if report["num_images_without_gt"]:
        lines.append(f"{report['num_images_without_gt']} images of the split have no GT mask and were not scored")
    return lines


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write the report as JSON, atomically."""
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def write_csv(path: Path, report: dict[str, Any]) -> None:
    """Write one row per class (fractions; empty = undefined), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["class_id", "class", *PER_CLASS_KEYS, "gt_pixels", "pred_pixels"])
    for class_id, name in enumerate(report["class_names"]):
        values = ["" if report[key][class_id] is None else f"{report[key][class_id]:.6f}" for key in PER_CLASS_KEYS]
        writer.writerow([class_id, name, *values, report["gt_pixels"][class_id], report["pred_pixels"][class_id]])
    atomic_write_text(path, buffer.getvalue())


IMAGE_KEYS = ("miou", "mbiou", "coverage", "pixel_accuracy")


def per_image_rows(scores: list[ImageScore]) -> list[dict[str, Any]]:
    """Per-image scores as JSON rows (``iou`` by class id, null where the class is not in the GT)."""
    return [{"id": s.image_id, **{key: getattr(s, key) for key in IMAGE_KEYS}, "iou": s.iou} for s in scores]


def write_per_image_csv(path: Path, scores: list[ImageScore], class_names: list[str]) -> None:
    """One row per image: id, the image figures, then an ``iou_<class>`` column per class (empty =
    not in the image's GT), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", *IMAGE_KEYS, *(f"iou_{name}" for name in class_names)])
    for score in scores:
        figures = [getattr(score, key) for key in IMAGE_KEYS] + score.iou
        writer.writerow([score.image_id, *("" if v is None else f"{v:.6f}" for v in figures)])
    atomic_write_text(path, buffer.getvalue())


def worst_images(scores: list[ImageScore], count: int) -> list[ImageScore]:
    """The ``count`` images of lowest mIoU (ties: lower mBIoU, then id), images without a defined mIoU last."""

    def key(score: ImageScore) -> tuple[float, float, str]:
        miou = 2.0 if score.miou is None else score.miou
        return miou, 2.0 if score.mbiou is None else score.mbiou, score.image_id

    return sorted(scores, key=key)[:count]


def worst_table(scores: list[ImageScore], count: int) -> Table:
    """The :func:`worst_images` as a Rich table in percent."""
    table = Table(title=f"the {count} images of lowest mIoU (%)")
    table.add_column("id")
    for heading in ("mIoU", "mBIoU", "coverage", "pixel acc."):
        table.add_column(heading, justify="right")
    for score in worst_images(scores, count):
        table.add_row(escape(score.image_id), *(percent(getattr(score, key)) for key in IMAGE_KEYS))
    return table

"""Build a report: collect every prediction folder's figures, then write the page."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.core.id_lists import write_id_list
from pseudolabel.datasets.base import Dataset
from pseudolabel.report.collect import collect, review_ids
from pseudolabel.report.page import write_report
from pseudolabel.runner.lock import RunLock


def prediction_names(folders: list[Path]) -> list[str]:
    """Short distinct names for prediction folders: their own names, numbered where they repeat."""
    names = [folder.name or str(folder) for folder in folders]
    return [name if names.count(name) == 1 else f"{name} ({index + 1})" for index, name in enumerate(names)]


REVIEW_LIST = "review.txt"
"""The report's list of images to check first (``export --ids`` takes it)."""


def build_report(
    dataset: Dataset, folders: list[Path], out: Path, worst: int = 12, allow_missing: bool = False, workers: int = 0
) -> Path:
    """``out/index.html`` for the prediction ``folders`` over ``dataset`` (under ``out``'s lock),
    and ``out/review.txt``: the first folder's ``worst`` images to check first; returns the
    page's path. ``workers``: scoring processes, 0 = all cores."""
    with RunLock(out, (0, 1)):
        facts = [
            collect(folder, dataset, name, allow_missing, workers or None)
            for folder, name in zip(folders, prediction_names(folders), strict=True)
        ]
        ids, chosen = review_ids(facts[0], dataset, worst)
        write_id_list(out / REVIEW_LIST, ids, f"{facts[0].folder}: the {len(ids)} images {chosen}, to review first")
        return write_report(out, dataset, facts, worst)

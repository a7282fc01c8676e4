"""The report folder: index.html (inline CSS, JS and SVG; no network) and JPEG thumbnails."""

from __future__ import annotations

import datetime
from html import escape
from pathlib import Path
from typing import Any

from pseudolabel import __version__
from pseudolabel.core.errors import PseudolabelError
from pseudolabel.core.files import atomic_write_text
from pseudolabel.core.images import write_image
from pseudolabel.core.masks import read_mask
from pseudolabel.core.safe_paths import id_path
from pseudolabel.datasets.base import Dataset
from pseudolabel.evaluate.overlay import render_panel
from pseudolabel.evaluate.summary import percent
from pseudolabel.report.charts import confusion_heatmap, iou_bars
from pseudolabel.report.collect import PredictionFacts, dump_json, review_ids, table_rows
from pseudolabel.report.script import PAGE_SCRIPT, PAGE_STYLE

THUMBNAIL_SIDE = 240
"""Longer side of each panel in a thumbnail, in pixels."""
HEADLINE = (("miou", "mIoU"), ("mbiou", "mBIoU"), ("coverage", "coverage"), ("miou_confident", "mIoU conf."),
            ("pixel_accuracy", "pixel acc."))  # fmt: skip


def write_thumbnail(out: Path, relative: str, picture: Any) -> None:
    """A JPEG of the panel picture at ``out/relative``."""
    write_image(out / relative, picture, "JPEG", quality=80)


def _thumbnails(out: Path, dataset: Dataset, prediction: PredictionFacts, index: int, ids: list[str]) -> list[str]:
    """Figures of ``ids`` for one prediction as <figure> elements (a failed image is named, not drawn)."""
    figures = []
    scores = {score.image_id: score for score in prediction.images}
    for image_id in ids:
        relative = id_path(Path(f"thumbs/{index}"), image_id, ".jpg").as_posix()
        try:
            sample = dataset.load(image_id)
            label_map = read_mask(id_path(prediction.folder, image_id, ".png"))
            gt = read_mask(sample.gt_path) if sample.gt_path is not None and prediction.scores else None
            write_thumbnail(out, relative, render_panel(sample.rgb, label_map, gt, dataset.class_names, THUMBNAIL_SIDE))
        except PseudolabelError as error:
            figures.append(f"<figure><figcaption>{escape(image_id)}: {escape(str(error))}</figcaption></figure>")
            continue
        score = scores.get(image_id)
        caption = escape(image_id) + (
            f" - mIoU {percent(score.miou)}, mBIoU {percent(score.mbiou)}, coverage {percent(score.coverage)}"
            if score else ""
        )  # fmt: skip
        figures.append(f'<figure><img loading="lazy" src="{escape(relative)}" alt="{escape(image_id)}">'
                       f"<figcaption>{caption}</figcaption></figure>")  # fmt: skip
    return figures


def _headline(predictions: list[PredictionFacts]) -> str:
    scored = [p for p in predictions if p.scores]
    if not scored:
        return "<p>No GT masks for this split: scores are not shown.</p>"
    head = "".join(f"<th>{label}</th>" for _, label in HEADLINE)
    rows = []
    for prediction in scored:
        cells = []
        for key, _ in HEADLINE:
            value, first = prediction.scores[key], scored[0].scores[key]
            diff = (
                "" if prediction is scored[0] or value is None or first is None else f" ({100 * (value - first):+.2f})"
            )
            cells.append(f"<td>{percent(value)}{diff}</td>")
        images = prediction.scores["num_images"]
        rows.append(f"<tr><th>{escape(prediction.name)}</th>{''.join(cells)}<td>{images}</td></tr>")
    return f"<table class='headline'><tr><th>predictions</th>{head}<th>images</th></tr>{''.join(rows)}</table>"


def _class_differences(names: list[str], scored: list[PredictionFacts]) -> str:
    """Per-class IoU of each prediction and its difference from the first, in points."""
    head = "".join(f"<th>{escape(p.name)}</th>" for p in scored)
    rows = []
    for class_id, name in enumerate(names):
        first = scored[0].scores["iou"][class_id]
        if first is None:
            continue
        cells = [f"<td>{percent(first)}</td>"]
        for prediction in scored[1:]:
            value = prediction.scores["iou"][class_id]
            cells.append(f"<td>{percent(value)} ({100 * (value - first):+.2f})</td>")
        rows.append(f"<tr><td>{escape(name)}</td>{''.join(cells)}</tr>")
    return f"<table class='differences'><tr><th>class IoU</th>{head}</tr>{''.join(rows)}</table>"


def _run_facts(prediction: PredictionFacts) -> str:
    run = prediction.run
    parts = [
        f"<h3>{escape(prediction.name)}</h3><p>{run.images} manifest records in {escape(str(prediction.folder))}</p>"
    ]
    if run.seconds:
        cells = "".join(f"<tr><td>{escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in run.seconds.items())
        parts.append(f"<table><tr><th>stage</th><th>mean seconds per image</th></tr>{cells}</table>")
    if run.failed:
        cells = "".join(f"<tr><td>{escape(i)}</td><td>{escape(e)}</td></tr>" for i, e in run.failed)
        parts.append(f"<table class='failed'><tr><th>failed image</th><th>error</th></tr>{cells}</table>")
    if run.excluded or run.excluded_pairs:
        dropped = ", ".join(f"{escape(c)} ({n})" for c, n in run.excluded.most_common()) or "none"
        parts.append(
            f"<p>exclusion: {run.excluded_pairs} (region, class) pairs over the threshold; dropped: {dropped}</p>"
        )
    if run.synonyms:
        cells = "".join(
            f"<tr><td>{escape(c)}</td><td>{', '.join(f'{escape(n)} ({k})' for n, k in wins.most_common())}</td></tr>"
            for c, wins in sorted(run.synonyms.items())
        )
        parts.append(f"<table><tr><th>class</th><th>POLE: chosen names</th></tr>{cells}</table>")
    if run.settings:
        parts.append(f"<details><summary>settings</summary><pre>{escape(dump_json(run.settings))}</pre></details>")
    return "".join(parts)


def write_report(out: Path, dataset: Dataset, predictions: list[PredictionFacts], worst: int) -> Path:
    """Write ``out/index.html`` and its thumbnails; returns the page's path."""
    names = dataset.class_names
    scored = [p for p in predictions if p.scores]
    sections = [f"<h2>Scores</h2>{_headline(predictions)}"]
    if scored:
        sections.append("<h2>IoU per class (%)</h2>" + iou_bars(names, {p.name: p.scores["iou"] for p in scored}))
        if len(scored) > 1:
            sections.append(_class_differences(names, scored))
        maps = "".join(f"<div><h3>{escape(p.name)}</h3>{confusion_heatmap(p.scores['confusion_matrix'], names)}</div>"
                       for p in scored)  # fmt: skip
        sections.append(f"<h2>Confusion (rows: GT, share of its pixels)</h2><div class='row'>{maps}</div>")
    for index, prediction in enumerate(predictions):
        ids, chosen = review_ids(prediction, dataset, worst)
        title = f"the {len(ids)} images {chosen}"
        figures = "".join(_thumbnails(out, dataset, prediction, index, ids))
        sections.append(f"<h2>{escape(prediction.name)}: {title}</h2><div class='gallery'>{figures}</div>")
    if scored:
        sections.append("<h2>Images</h2><div id='controls'></div><table id='images'></table><div id='pages'></div>")
    sections.append("<h2>Runs</h2>" + "".join(_run_facts(p) for p in predictions))
    data = {"classes": names, "predictions": [p.name for p in scored], "rows": table_rows(scored)}
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>pseudolabel report</title>"
        f"<style>{PAGE_STYLE}</style></head><body><h1>pseudolabel report</h1>"
        f"<p>{escape(dataset.name)} {escape(str(getattr(dataset, 'split', '')))}, {len(dataset.ids())} images; "
        f"pseudolabel {__version__}, {when}</p><p id='status'></p>{''.join(sections)}"
        f"<script type='application/json' id='data'>{dump_json(data)}</script><script>{PAGE_SCRIPT}</script>"
        "</body></html>"
    )
    atomic_write_text(out / "index.html", html)
    return out / "index.html"

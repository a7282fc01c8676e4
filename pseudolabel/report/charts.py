"""Inline SVG charts for the report, coloured with the VOC palette so they agree with the masks."""

from __future__ import annotations

from html import escape

import numpy as np

from pseudolabel.core.masks import VOC_COLORMAP

ROW, LABEL_WIDTH, BAR_WIDTH = 14, 110, 260


def _colour(class_id: int, opacity: float = 1.0) -> str:
    red, green, blue = (int(v) for v in VOC_COLORMAP[class_id])
    return f"rgba({red},{green},{blue},{opacity:.2f})"


def iou_bars(class_names: list[str], ious: dict[str, list[float | None]]) -> str:
    """Grouped horizontal bars: per class (with GT in any prediction), one bar per prediction.

    Args:
        ious: prediction name -> IoU per class id (None: no GT pixels).
    """
    names = list(ious)
    classes = [c for c in range(len(class_names)) if any(ious[n][c] is not None for n in names)]
    group = ROW * len(names) + 4
    height = group * len(classes) + 20
    parts = [f'<svg class="bars" width="{LABEL_WIDTH + BAR_WIDTH + 60}" height="{height}" role="img">']
    for row, class_id in enumerate(classes):
        top = row * group
        label = escape(class_names[class_id])
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{top + ROW - 3}" text-anchor="end">{label}</text>')
        for index, name in enumerate(names):
            value = ious[name][class_id]
            y = top + index * ROW
            width = 0 if value is None else value * BAR_WIDTH
            opacity = 1.0 - 0.45 * index / max(len(names) - 1, 1)
            title = f"{escape(name)}: {class_names[class_id]} IoU " + ("-" if value is None else f"{100 * value:.1f}")
            parts.append(
                f'<rect x="{LABEL_WIDTH}" y="{y + 1}" width="{width:.1f}" height="{ROW - 3}" '
                f'fill="{_colour(class_id, opacity)}" stroke="#333" stroke-width="0.5"><title>{title}</title></rect>'
            )
            text = "-" if value is None else f"{100 * value:.1f}"
            parts.append(f'<text x="{LABEL_WIDTH + width + 4:.1f}" y="{y + ROW - 3}">{text}</text>')
    axis = height - 16
    for tick in (0, 25, 50, 75, 100):
        x = LABEL_WIDTH + tick / 100 * BAR_WIDTH
        parts.append(f'<line x1="{x}" y1="0" x2="{x}" y2="{axis}" stroke="#ccc" stroke-width="0.5"/>')
        parts.append(f'<text x="{x}" y="{axis + 12}" text-anchor="middle">{tick}</text>')
    parts.append("</svg>")
    return "".join(parts)


def confusion_heatmap(confusion: list[list[int]], class_names: list[str], cell: int = 16) -> str:
    """Rows = GT class, columns = predicted class and 255; each row normalised to its GT pixels.
    Classes without GT or predictions are left out; a cell's title gives the share and count."""
    matrix = np.asarray(confusion, dtype=np.float64)
    count = len(class_names)
    keep = [c for c in range(count) if matrix[c].sum() > 0 or matrix[:, c].sum() > 0]
    columns = [*keep, count]
    labels = [class_names[c] for c in keep]
    left, top = LABEL_WIDTH, 120
    width, height = left + cell * len(columns) + 40, top + cell * len(keep) + 10
    parts = [f'<svg class="heatmap" width="{width}" height="{height}" role="img">']
    for index, column in enumerate(columns):
        x = left + index * cell + cell / 2
        name = "255 (unsure)" if column == count else class_names[column]
        parts.append(f'<text transform="translate({x},{top - 4}) rotate(-60)">{escape(name)}</text>')
    for row_index, class_id in enumerate(keep):
        y = top + row_index * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell - 4}" text-anchor="end">{escape(labels[row_index])}</text>')
        total = matrix[class_id].sum()
        for index, column in enumerate(columns):
            share = matrix[class_id, column] / total if total else 0.0
            shade = int(255 - 215 * share)
            fill = f"rgb({shade},{shade},255)" if column != class_id else f"rgb({shade},255,{shade})"
            title = f"GT {labels[row_index]} -> {escape('255' if column == count else class_names[column])}: "
            title += f"{100 * share:.1f}% ({int(matrix[class_id, column]):,} px)"
            parts.append(
                f'<rect x="{left + index * cell}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                f'stroke="#fff"><title>{title}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)

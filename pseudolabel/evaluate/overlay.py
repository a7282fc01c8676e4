"""Pictures of pseudo-labels: one PNG panel per image, image | pseudo-label over the image (class
colours, contours) | GT | error map, with titles and a legend of class names and error colours.

Colours are the VOC palette's, so every picture and the report agree. Panels are downscaled so
that their longer side is at most ``max_side`` pixels (masks nearest-neighbour, image by area).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pseudolabel.core.images import downscale, fitted_size
from pseudolabel.core.masks import IGNORE_INDEX, VOC_COLORMAP

ALPHA = 0.5
"""Weight of a class colour over the image in the pseudo-label panel."""
GAP, TITLE_HEIGHT, LEGEND_ROW = 4, 18, 18
"""Pixels between panels, of the title band and of one legend row."""
ERROR_COLOURS = {"missed": (255, 140, 0), "wrong class": (220, 20, 60), "unsure (255)": (30, 144, 255)}
"""Error-map colours: GT object pixels predicted background, pixels given another class
(including background predicted as a class), and pixels predicted 255."""
IGNORED_GT = (96, 96, 96)
"""Error-map colour where the GT itself is 255 (not scored)."""


def fit(rgb: np.ndarray, maps: list[np.ndarray], max_side: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``rgb`` uint8 [H, W, 3] and label maps uint8 [H, W] scaled so the longer side is <= ``max_side``."""
    size = fitted_size(*rgb.shape[:2], max_side)
    if size is None:
        return rgb, maps
    return downscale(rgb, max_side), [cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in maps]


def blend(rgb: np.ndarray, label_map: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The image with every labelled pixel (class ids > 0, and 255) tinted by its palette colour at
    ``alpha``, and each class region's contour drawn in full colour; background stays the image."""
    out = rgb.astype(np.float32)
    tinted = label_map > 0
    colours = VOC_COLORMAP[label_map].astype(np.float32)
    out[tinted] = (1 - alpha) * out[tinted] + alpha * colours[tinted]
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    for class_id in np.unique(label_map):
        if class_id == 0:
            continue
        contours, _ = cv2.findContours((label_map == class_id).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in VOC_COLORMAP[class_id]), 1)
    return out


def error_map(rgb: np.ndarray, label_map: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The image in dim grey, with missed, wrong-class and unsure pixels in :data:`ERROR_COLOURS`
    and pixels the GT ignores in :data:`IGNORED_GT`; correct pixels stay grey."""
    grey = (0.35 * rgb.astype(np.float32).mean(axis=2) + 40).astype(np.uint8)
    out = np.repeat(grey[..., None], 3, axis=2)
    scored = gt != IGNORE_INDEX
    unsure = scored & (label_map == IGNORE_INDEX)
    missed = scored & (gt != 0) & (label_map == 0)
    wrong = scored & ~unsure & ~missed & (label_map != gt)
    for mask, colour in zip((missed, wrong, unsure), ERROR_COLOURS.values(), strict=True):
        out[mask] = colour
    out[~scored] = IGNORED_GT
    return out


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def render_panel(
    rgb: np.ndarray, label_map: np.ndarray, gt: np.ndarray | None, class_names: list[str], max_side: int = 512
) -> np.ndarray:
    """The picture of one image: uint8 [H', W', 3] with titled panels side by side and a legend.

    Args:
        rgb: uint8 [H, W, 3]; label_map, gt: uint8 [H, W] (gt None: no GT and no error panels).
    """
    maps = [label_map] if gt is None else [label_map, gt]
    small, maps = fit(rgb, maps, max_side)
    panels = {"image": small, "pseudo-label": blend(small, maps[0])}
    if gt is not None:
        panels["ground truth"] = blend(small, maps[1])
        panels["errors"] = error_map(small, maps[0], maps[1])
    height, width = small.shape[:2]
    present = sorted({int(c) for m in maps for c in np.unique(m)} - {0, IGNORE_INDEX})
    legend = [(class_names[c] if c < len(class_names) else f"class {c}", VOC_COLORMAP[c]) for c in present]
    if gt is not None:
        legend += [(name, colour) for name, colour in ERROR_COLOURS.items()]
    canvas_width = len(panels) * width + (len(panels) - 1) * GAP
    rows = _legend_rows(legend, canvas_width)
    canvas = Image.new("RGB", (canvas_width, TITLE_HEIGHT + height + LEGEND_ROW * len(rows)), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for index, (title, picture) in enumerate(panels.items()):
        left = index * (width + GAP)
        draw.text((left + 2, 2), title, fill="black", font=font)
        canvas.paste(Image.fromarray(picture), (left, TITLE_HEIGHT))
    for row_index, row in enumerate(rows):
        top = TITLE_HEIGHT + height + row_index * LEGEND_ROW + 3
        for left, name, colour in row:
            draw.rectangle((left, top, left + 11, top + 11), fill=tuple(int(v) for v in colour), outline="black")
            draw.text((left + 15, top), name, fill="black", font=font)
    return np.asarray(canvas)


def _legend_rows(entries: list[tuple[str, np.ndarray]], width: int) -> list[list[tuple[int, str, np.ndarray]]]:
    """Legend entries placed left to right, wrapping to new rows at ``width``: (x, name, colour)."""
    rows: list[list[tuple[int, str, np.ndarray]]] = []
    left = width
    for name, colour in entries:
        span = 15 + 7 * len(name) + 12
        if left + span > width and (not rows or rows[-1]):
            rows.append([])
            left = 2
        rows[-1].append((left, name, colour))
        left += span
    return rows

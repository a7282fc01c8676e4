"""Label Studio's JSON export: each task's newest submitted annotation, brush RLE or polygons
(points in percent of the image), painted by label name; ``unsure`` paints 255."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.files import read_user_text
from pseudolabel.core.masks import IGNORE_INDEX
from pseudolabel.core.prompts import PromptSet
from pseudolabel.corrections.canvas import Canvas, Unreadable
from pseudolabel.datasets.coco_gt import instance_mask
from pseudolabel.export import brush_rle
from pseudolabel.export.label_studio import UNSURE_LABEL

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
"""Label Studio renames uploaded files ``<8 hex digits>-<name>``."""


def task_image_id(task: dict[str, Any]) -> str:
    """The dataset id of a task: ``data.pseudolabel_id`` (set by ``export``), else the image's
    file name without suffix and without Label Studio's upload prefix."""
    data = task.get("data", {})
    if data.get("pseudolabel_id"):
        return str(data["pseudolabel_id"])
    name = Path(str(data.get("image", "")).split("?d=")[-1]).with_suffix("").name
    return _UPLOAD_PREFIX.sub("", name)


def newest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's most recently updated annotation that was not skipped, or None."""
    kept = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
    return max(kept, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""), default=None)


def _result_mask(result: dict[str, Any], height: int, width: int) -> np.ndarray | None:
    """bool [H, W] of one brush or polygon result; None for other result types."""
    value = result.get("value", {})
    kind = str(result.get("type", "")).lower()
    if kind == "brushlabels":
        rle = value.get("rle", result.get("rle"))
        return brush_rle.decode(rle, height, width) > 0
    if kind == "polygonlabels":
        points = np.asarray(value["points"], np.float64).reshape(-1, 2) / 100 * [width, height]
        return instance_mask([points.ravel().tolist()], height, width)
    return None


def _label(result: dict[str, Any]) -> str | None:
    """The result's label name (brush or polygon)."""
    value = result.get("value", {})
    names = value.get("brushlabels") or value.get("polygonlabels") or value.get("labels") or []
    return str(names[0]) if names else None


def read_label_studio(path: Path, prompts: PromptSet) -> Iterator[Canvas | Unreadable]:
    """One canvas per reviewed task (tasks without a submitted annotation are listed as such).

    Raises:
        ConfigError: unreadable JSON, or a label that is not a class of ``prompts`` nor ``unsure``.
    """
    try:
        tasks = json.loads(read_user_text(path, "Label Studio export"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read the Label Studio export {path}: {error}") from error
    if not isinstance(tasks, list):
        raise ConfigError(f"{path} is not a Label Studio JSON export (a list of tasks)")
    for task in tasks:
        image_id = task_image_id(task)
        annotation = newest_annotation(task)
        if annotation is None:
            yield Unreadable(image_id, "not reviewed: the task has no submitted annotation")
            continue
        results = [r for r in annotation.get("result", []) if _label(r) is not None]
        if not results:
            yield Unreadable(image_id, "the annotation has no brush or polygon labels")
            continue
        try:
            canvas = Canvas(image_id, int(results[0]["original_height"]), int(results[0]["original_width"]))
            for result in results:
                label = _label(result)
                class_id = IGNORE_INDEX if label == UNSURE_LABEL else prompts.class_id(label, f"{path}: ")
                mask = _result_mask(result, canvas.height, canvas.width)
                if mask is not None:
                    canvas.paint(mask, class_id)
        except (KeyError, TypeError, ValueError) as error:
            yield Unreadable(image_id, f"{path}: task {task.get('id')}: {error}")
            continue
        yield canvas

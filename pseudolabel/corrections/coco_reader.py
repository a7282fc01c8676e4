"""COCO instances JSON (from any tool: CVAT, Label Studio's COCO export, pycocotools): each
image's polygons, RLE or uncompressed RLE painted by category name, crowd regions as unsure."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.files import read_user_text
from pseudolabel.core.masks import IGNORE_INDEX
from pseudolabel.core.prompts import PromptSet
from pseudolabel.corrections.canvas import Canvas, Unreadable
from pseudolabel.datasets.coco_gt import drawable, instance_mask


def read_coco(path: Path, prompts: PromptSet) -> Iterator[Canvas | Unreadable]:
    """One canvas per image of the file (the id is its ``file_name`` without folder and suffix).

    Raises:
        ConfigError: unreadable JSON, or a category whose name is not a class of ``prompts``.
    """
    try:
        data = json.loads(read_user_text(path, "COCO annotations"))
        images, annotations = data["images"], data.get("annotations", [])
        class_of = {c["id"]: prompts.class_id(c["name"], f"{path}: category {c['id']}: ") for c in data["categories"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConfigError(f"cannot read COCO annotations {path}: {error}") from error
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for annotation in annotations:
        by_image[annotation.get("image_id")].append(annotation)
    for image in images:
        image_id = Path(str(image.get("file_name", ""))).with_suffix("").name
        try:
            canvas = Canvas(image_id, int(image["height"]), int(image["width"]))
            for annotation in by_image.get(image.get("id"), []):
                segmentation = drawable(annotation.get("segmentation"))
                if segmentation is None:
                    continue
                mask = instance_mask(segmentation, canvas.height, canvas.width)
                crowd = bool(annotation.get("iscrowd"))
                canvas.paint(mask, IGNORE_INDEX if crowd else class_of[annotation["category_id"]])
        except (KeyError, TypeError, ValueError) as error:
            yield Unreadable(image_id, f"{path}: image {image.get('id')}: {error!r}")
            continue
        yield canvas

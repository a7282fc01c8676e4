"""MS COCO 2014/2017: images + instances_<split>.json, 81 contiguous classes.

Class ids are contiguous: 0 = background, then the 80 categories in increasing COCO category
id (person = 1, ..., toothbrush = 80); ``prompts/coco.yaml`` records each class's ``coco_id``.
Images without any instance annotation are left out of the split (they carry no image-level
label), and annotations whose polygons all have fewer than 3 points or no area give no label;
``notices`` says how many of each. Optional GT masks with contiguous ids are read from
SegmentationClass/<split>/<stem>.png.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pseudolabel.core.components import Component
from pseudolabel.core.errors import ConfigError, listed
from pseudolabel.core.files import read_user_text
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS
from pseudolabel.core.prompts import PromptSet, load_prompts, name_key
from pseudolabel.core.safe_paths import id_path
from pseudolabel.datasets.base import Dataset, WithoutLabels
from pseudolabel.datasets.coco_gt import cache_folder, drawable, render_cache


class CocoDataset(Dataset):
    """A COCO split.

    Args:
        root: folder holding ``annotations/`` and the image folder ``<split>/`` (or
            ``images/<split>/``).
        split: ``train2014``, ``val2014``, ``train2017``, ``val2017``, ...
        annotations: instances JSON; default ``root/annotations/instances_<split>.json``.
    """

    name = "coco"

    def __init__(
        self,
        root: str | Path,
        split: str = "train2014",
        prompts: PromptSet | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        annotations: str | Path | None = None,
    ) -> None:
        super().__init__(prompts or load_prompts("coco"), max_image_pixels)
        self._own_prompts = prompts is not None
        self.root = Path(root).expanduser()
        self.split = split
        instances = Path(annotations) if annotations else self.root / "annotations" / f"instances_{split}.json"
        if not instances.is_file():
            raise ConfigError(f"COCO annotations not found: {instances}")
        self.image_dir = next(
            (d for d in (self.root / split, self.root / "images" / split) if d.is_dir()), self.root / split
        )
        self.image_root = self.image_dir
        self.instances = instances
        self._gt_cache = cache_folder(instances, split)
        """Where :meth:`prepare_gt` renders GT (named once: a stat and a hash, not one per image)."""
        self._numbers: dict[str, int] = {}
        """File stem -> the annotation file's integer ``image_id``."""
        self._files, self._labels = self._read_instances(instances)

    def _read_instances(self, path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
        try:
            data = json.loads(read_user_text(path, "COCO annotations"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read COCO annotations {path}: {error}") from error
        if not self._own_prompts and not matches_prompts(data.get("categories", []), self.prompts):
            self.prompts = prompts_from_categories(data.get("categories", []), str(path))
        contiguous = coco_id_to_class_id(self.prompts)
        for category in data.get("categories", []):
            class_id = contiguous.get(category["id"])
            if class_id is None or name_key(self.class_names[class_id]) != name_key(category["name"]):
                raise ConfigError(
                    f"{path}: category {category['id']} {category['name']!r} does not match {self.prompts.source}"
                )
        files = {str(image["id"]): image["file_name"] for image in data.get("images", [])}
        labels: dict[str, set[int]] = defaultdict(set)
        degenerate = []
        for annotation in data.get("annotations", []):
            category = annotation.get("category_id")
            if category not in contiguous:
                nearest = self._nearest(category, contiguous)
                raise ConfigError(f"{path}: annotation {annotation.get('id')} has category_id {category!r}, which "
                                  f"is not a category of the file; nearest: {nearest}")  # fmt: skip
            if annotation.get("segmentation") and drawable(annotation["segmentation"]) is None:
                degenerate.append(annotation.get("id"))  # nothing to draw: no label from it either
                continue
            labels[str(annotation["image_id"])].add(contiguous[category])
        if degenerate:
            self.notices.append(
                f"{path.name}: {_counted(degenerate, 'annotation')} skipped, their polygons have fewer than 3 points "
                f"or no area (no label, no GT): ids {listed(degenerate)}"
            )
        unlabelled = [files[key] for key in files if key not in labels]
        if unlabelled:
            self.notices.append(
                f"{path.name}: {_counted(unlabelled, 'image')} of {len(files)} left out, without annotations "
                f"(no image-level labels): {listed(unlabelled)}"
            )
        by_stem_files = {Path(files[key]).stem: files[key] for key in labels if key in files}
        if all(key.isdigit() for key in labels if key in files):
            self._numbers = {Path(files[key]).stem: int(key) for key in labels if key in files}
        by_stem_labels = {Path(files[key]).stem: tuple(sorted(value)) for key, value in labels.items() if key in files}
        return by_stem_files, by_stem_labels

    def _nearest(self, category: object, contiguous: dict[int, int]) -> str:
        """The file's three category ids closest to ``category``, with their names."""
        number = category if isinstance(category, (int, float)) else 0
        closest = sorted(contiguous, key=lambda known: (abs(known - number), known))[:3]
        return ", ".join(f"{known} {self.class_names[contiguous[known]]!r}" for known in closest)

    def ids(self) -> list[str]:
        return sorted(self._files)

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / self._files[image_id]

    def numeric_ids(self) -> dict[str, int]:
        """COCO's own ``image_id`` of each image (positions only when the file's ids are not integers)."""
        return self._numbers if self._numbers else super().numeric_ids()

    def classes(self, image_id: str) -> tuple[int, ...]:
        return self._labels[image_id]

    def gt_path(self, image_id: str) -> Path | None:
        """``SegmentationClass/<split>/<id>.png`` when the user has rendered GT masks, else the
        cached rendering of the annotations (None until :meth:`prepare_gt` made it)."""
        for folder in (self.root / "SegmentationClass" / self.split, self._gt_cache):
            candidate = id_path(folder, image_id, ".png")
            if candidate.is_file():
                return candidate
        return None

    def prepare_gt(self, on_progress: Callable[[int, int], None] | None = None) -> None:
        """Render the split's GT from the annotations into the cache once, unless the user's own
        ``SegmentationClass/<split>/`` masks are there (see :mod:`pseudolabel.datasets.coco_gt`)."""
        if (self.root / "SegmentationClass" / self.split).is_dir():
            return
        render_cache(self.instances, self.split, coco_id_to_class_id(self.prompts), on_progress)


def _counted(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''}"


def coco_id_to_class_id(prompts: PromptSet) -> dict[int, int]:
    """Map COCO category ids (1..90) to contiguous class ids (1..80) as the prompt set records."""
    mapping = {entry.coco_id: index for index, entry in enumerate(prompts.classes) if entry.coco_id is not None}
    if not mapping:
        raise ConfigError(f"{prompts.source} has no coco_id entries; use the coco prompt set")
    return mapping


def matches_prompts(categories: list[dict], prompts: PromptSet) -> bool:
    """True when every category is the prompt set's class of that ``coco_id`` and name."""
    contiguous = coco_id_to_class_id(prompts)
    return all(
        category["id"] in contiguous
        and name_key(prompts.class_names[contiguous[category["id"]]]) == name_key(category["name"])
        for category in categories
    )


def prompts_from_categories(categories: list[dict], source: str) -> PromptSet:
    """A prompt set of a COCO-format file's own categories: classes in increasing category id,
    each recording its ``coco_id``; COCO's templates and background words."""
    if not categories:
        raise ConfigError(f"{source} has no categories")
    ordered = sorted(categories, key=lambda category: category["id"])
    own = load_prompts("coco").with_class_names([str(c["name"]) for c in ordered], f"the categories of {source}")
    classes = (
        own.classes[0],
        *(replace(e, coco_id=int(c["id"])) for e, c in zip(own.classes[1:], ordered, strict=True)),
    )
    return replace(own, classes=classes)


COCO = Component(
    "dataset", "coco", "COCO instances JSON (--root with annotations/instances_<split>.json and <split>/).",
    "pseudolabel.datasets.coco:open_coco", prompt_set="coco", own_classes=True,
)  # fmt: skip


def open_coco(root: Path, split: str | None, prompts: PromptSet | None, labels_file: Path | None,
              gt_dir: Path | None, max_image_pixels: int | None) -> Dataset:  # fmt: skip
    """A COCO split (``train2014`` by default); ``labels_file`` ``none`` hides its labels."""
    dataset = CocoDataset(root, split or "train2014", prompts, max_image_pixels)
    return WithoutLabels(dataset) if str(labels_file) == "none" else dataset

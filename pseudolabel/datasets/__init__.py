"""Datasets behind one Sample type: ``voc``, ``coco`` and ``folder`` (a user's own images)."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.core.components import component
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS
from pseudolabel.core.prompts import PromptSet, load_class_list, load_prompts
from pseudolabel.datasets.base import Dataset, Sample

__all__ = ["Dataset", "Sample", "build_dataset", "resolve_prompts"]


def resolve_prompts(dataset: str, prompts: str | None = None, classes: Path | None = None) -> PromptSet:
    """The prompt set of a run: ``--prompts`` (built-in name or YAML), else the dataset reader's
    own, with class names replaced by a ``--classes`` list when given."""
    base = load_prompts(prompts or component("dataset", dataset).prompt_set)
    return load_class_list(classes, base) if classes else base


def build_dataset(
    name: str,
    root: Path,
    split: str | None = None,
    prompts: PromptSet | None = None,
    labels_file: Path | None = None,
    gt_dir: Path | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> Dataset:
    """Open a dataset split with the registered reader ``name``, as ``--dataset`` does.

    ``labels_file`` ``none`` means no image-level labels (zero-shot).
    """
    return component("dataset", name).load()(Path(root), split, prompts, labels_file, gt_dir, max_image_pixels)

"""Datasets behind one Sample type: ``voc``, ``coco`` and ``folder`` (a user's own images)."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS
from pseudolabel.core.prompts import PromptSet, load_class_list, load_prompts
from pseudolabel.datasets.base import Dataset, Sample, WithoutLabels
from pseudolabel.datasets.coco import CocoDataset
from pseudolabel.datasets.folder import FolderDataset
from pseudolabel.datasets.voc import VocDataset

DATASET_NAMES = ("voc", "coco", "folder")
DEFAULT_SPLITS = {"voc": "train", "coco": "train2014"}

__all__ = ["DATASET_NAMES", "Dataset", "Sample", "build_dataset", "resolve_prompts"]


def resolve_prompts(dataset: str, prompts: str | None = None, classes: Path | None = None) -> PromptSet:
    """The prompt set of a run: ``--prompts`` (built-in name or YAML), else the dataset's own
    (``voc`` for folders), with class names replaced by a ``--classes`` list when given."""
    base = load_prompts(prompts or ("coco" if dataset == "coco" else "voc"))
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
    """Build a dataset by name, as the CLI's ``--dataset`` option does.

    ``labels_file`` ``none`` means no image-level labels (zero-shot): a folder dataset then
    takes every image under ``root``, and VOC/COCO hide their labels.
    """
    if prompts is None and name == "voc":
        prompts = resolve_prompts(name)
    if labels_file is not None and str(labels_file) == "none":
        if name == "folder":
            return FolderDataset(root, None, prompts, max_image_pixels, gt_dir)
        return WithoutLabels(build_dataset(name, root, split, prompts, None, gt_dir, max_image_pixels))
    if name == "voc":
        return VocDataset(root, split or DEFAULT_SPLITS["voc"], prompts, max_image_pixels)
    if name == "coco":
        return CocoDataset(root, split or DEFAULT_SPLITS["coco"], prompts, max_image_pixels)
    if name == "folder":
        if labels_file is None:
            raise ConfigError("--dataset folder needs --labels FILE (CSV or JSON: image -> class names)")
        return FolderDataset(root, labels_file, prompts, max_image_pixels, gt_dir)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")

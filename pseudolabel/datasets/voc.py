"""PASCAL VOC 2012 layout: JPEGImages, SegmentationClass[Aug], Annotations, ImageSets/Segmentation."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

from pseudolabel.core.components import Component
from pseudolabel.core.errors import ConfigError, MaskError, UnsafePathError
from pseudolabel.core.files import read_user_text
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS
from pseudolabel.core.masks import mask_class_ids, read_mask
from pseudolabel.core.prompts import PromptSet, load_prompts
from pseudolabel.core.safe_paths import check_id, id_path
from pseudolabel.datasets.base import Dataset, WithoutLabels

GT_FOLDERS = ("SegmentationClassAug", "SegmentationClass")
"""Where GT masks are looked for, in this order, per image."""


class VocDataset(Dataset):
    """A VOC2012 split.

    Args:
        root: the VOC2012 folder (holding JPEGImages/). A VOCdevkit folder, or the folder
            holding VOCdevkit, is accepted too.
        split: name of a list in ImageSets/Segmentation (train, val, trainaug, ...).

    Image labels come from Annotations/<id>.xml object names, as CLIP-ES and POLE take them for
    every image; images without an XML file take the classes present in their GT mask (except
    0 and 255). The two differ for a few VOC images.
    """

    name = "voc"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        prompts: PromptSet | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__(prompts or load_prompts("voc"), max_image_pixels)
        self.root = find_voc_root(Path(root).expanduser())
        self.image_root = self.root / "JPEGImages"
        self.split = split
        self._ids = read_split_file(self.root, split)
        self.rejected = split_file_problems(self.root, split, self._ids)

    def ids(self) -> list[str]:
        return list(self._ids)

    def image_path(self, image_id: str) -> Path:
        return id_path(self.image_root, image_id, ".jpg")

    def gt_path(self, image_id: str) -> Path | None:
        for folder in GT_FOLDERS:
            candidate = id_path(self.root / folder, image_id, ".png")
            if candidate.is_file():
                return candidate
        return None

    def classes(self, image_id: str) -> tuple[int, ...]:
        annotation = id_path(self.root / "Annotations", image_id, ".xml")
        if annotation.is_file():
            return self._labels_from_annotation(annotation)
        gt = self.gt_path(image_id)
        if gt is not None:
            return mask_class_ids(read_mask(gt), self.num_classes, gt)
        raise MaskError(
            f"no labels for {image_id}: no mask in {' or '.join(GT_FOLDERS)} and no Annotations/{image_id}.xml "
            f"under {self.root}"
        )

    def _labels_from_annotation(self, path: Path) -> tuple[int, ...]:
        try:
            tree = ElementTree.parse(path)
        except ElementTree.ParseError as error:
            raise MaskError(f"cannot parse annotation {path}: {error}") from error
        names = [obj.findtext("name", "").strip() for obj in tree.getroot().iter("object")]
        return tuple(sorted({self.prompts.class_id(name, where=f"{path}: ") for name in names if name}))


def find_voc_root(root: Path) -> Path:
    """The folder holding JPEGImages/, given it or a VOCdevkit folder or the folder above."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise ConfigError(f"{root} is not a VOC2012 folder: no JPEGImages/ in it (nor in VOC2012/ or VOCdevkit/VOC2012/)")


SPLIT_FOLDERS = ("Segmentation", "SegmentationAug")
"""ImageSets/ folders searched for split lists (SegmentationAug: deeplab-pytorch's layout)."""
SPLIT_ALIASES = {"trainaug": "train_aug", "train_aug": "trainaug"}
"""CLIP-ES and SAM_WSSS call the 10,582-image list train_aug, other tools trainaug."""


def find_split_file(root: Path, split: str) -> Path:
    """ImageSets/{Segmentation,SegmentationAug}/<split>.txt, also under the split's other name."""
    names = [split, *([SPLIT_ALIASES[split]] if split in SPLIT_ALIASES else [])]
    for folder in SPLIT_FOLDERS:
        for name in names:
            path = root / "ImageSets" / folder / f"{name}.txt"
            if path.is_file():
                return path
    available = sorted({p.stem for folder in SPLIT_FOLDERS for p in (root / "ImageSets" / folder).glob("*.txt")})
    looked = " or ".join(f"ImageSets/{folder}/{split}.txt" for folder in SPLIT_FOLDERS)
    listed = ", ".join(available) or "none"
    raise ConfigError(f"split {split!r} not found: no {looked} under {root} (available: {listed})")


def read_split_file(root: Path, split: str) -> list[str]:
    """Ids listed in the split's list (see :func:`find_split_file`).

    Lines may be plain ids or DeepLab-style ``/JPEGImages/<id>.jpg /Segmentation.../<id>.png``
    pairs; the id is the stem of the first field.
    """
    path = find_split_file(root, split)
    ids = [Path(line.split()[0]).stem for line in read_user_text(path, "split list").splitlines() if line.strip()]
    duplicates = sorted(image_id for image_id, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ConfigError(f"{path} lists ids more than once: {', '.join(duplicates[:10])}")
    return ids


def split_file_problems(root: Path, split: str, ids: list[str]) -> dict[str, str]:
    """Ids of the split list that cannot name a file, with the line that gave them."""
    path = find_split_file(root, split)
    problems = {}
    lines = [
        (number, line)
        for number, line in enumerate(read_user_text(path, "split list").splitlines(), start=1)
        if line.strip()
    ]
    for (line_number, _), image_id in zip(lines, ids, strict=True):
        try:
            check_id(image_id)
        except UnsafePathError as error:
            problems[image_id] = f"{path}:{line_number}: {error}"
    return problems


VOC = Component(
    "dataset", "voc", "PASCAL VOC 2012 (--root VOC2012, --split a list in ImageSets/Segmentation).",
    "pseudolabel.datasets.voc:open_voc",
)  # fmt: skip


def open_voc(root: Path, split: str | None, prompts: PromptSet | None, labels_file: Path | None,
             gt_dir: Path | None, max_image_pixels: int | None) -> Dataset:  # fmt: skip
    """A VOC split (``train`` by default); ``labels_file`` ``none`` hides its labels (zero-shot)."""
    dataset = VocDataset(root, split or "train", prompts, max_image_pixels)
    return WithoutLabels(dataset) if str(labels_file) == "none" else dataset

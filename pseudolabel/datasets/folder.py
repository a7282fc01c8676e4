"""A user's own images: an image folder plus a labels file naming the classes in each image.

Labels file formats (chosen by suffix):

* CSV: ``image,labels`` rows; ``labels`` holds class names separated by ``;`` (further columns
  are read as more names). A first row starting with ``image`` is a header; ``#`` starts a
  comment line.
* JSON: ``{"img1.jpg": ["cat", "sofa"], ...}`` or ``[{"image": "img1.jpg", "labels": [...]}, ...]``.

Image paths are relative to the folder (an extension may be left out). The id of an image is
its relative path without extension. Every problem in the file is reported before any work.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
from pathlib import Path
from typing import Any

from pseudolabel.core.components import Component
from pseudolabel.core.errors import ConfigError, UnsafePathError, listed
from pseudolabel.core.files import read_user_text
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS
from pseudolabel.core.prompts import PromptSet, load_prompts, name_key
from pseudolabel.core.safe_paths import check_id, id_path, resolve_inside
from pseudolabel.datasets.base import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
HEADER_WORDS = {"image", "file", "filename", "path"}


class FolderDataset(Dataset):
    """Images in ``root`` listed in ``labels_file``; class names resolved through ``prompts``.

    Args:
        labels_file: CSV or JSON, or None for every image under ``root`` without labels
            (zero-shot).
        gt_dir: optional folder of GT masks named ``<id>.png``.
    """

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        labels_file: str | Path | None,
        prompts: PromptSet | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        gt_dir: str | Path | None = None,
    ) -> None:
        super().__init__(prompts or load_prompts("voc"), max_image_pixels)
        self._own_prompts = prompts is not None
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ConfigError(f"image folder {self.root} does not exist")
        self.image_root = self.root
        self.gt_dir = Path(gt_dir).expanduser() if gt_dir else None
        self._paths: dict[str, Path | None] = {}
        self._labels: dict[str, tuple[int, ...]] = {}
        if labels_file is None:
            self._list_images()
        elif str(labels_file) == CLASS_FOLDERS:
            self._read_entries(class_folder_entries(self.root), f"{self.root}/<class>/")
        else:
            path = Path(labels_file).expanduser()
            if not path.is_file():
                raise ConfigError(f"labels file {path} does not exist")
            entries = read_json_labels(path) if path.suffix.lower() == ".json" else read_csv_labels(path)
            self._read_entries(entries, str(path))

    def _list_images(self) -> None:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                image_id = path.relative_to(self.root).with_suffix("").as_posix()
                if image_id in self._labels:
                    raise ConfigError(f"two images in {self.root} share the id {image_id!r} (same name, other suffix)")
                self._paths[image_id] = path
                self._labels[image_id] = ()
        if not self._labels:
            raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")

    def _read_entries(self, entries: list[tuple[str, str, list[str]]], source: str) -> None:
        """Take ``(where, image, class names)`` entries: find each image, refuse unsafe ones,
        resolve the names (the classes come from the entries unless a prompt set was given)."""
        if not entries:
            raise ConfigError(f"{source} lists no images")
        if not self._own_prompts:
            self.prompts = prompts_for_names([name for _, _, names in entries for name in names], source)
        missing: list[str] = []
        for where, image, names in entries:
            if not names:
                raise ConfigError(f"{where}: {image} has no labels; give at least one class name or remove it")
            try:
                image_path = self._find_image(image)
                if image_path is None:
                    missing.append(image)
                    continue
                resolve_inside(self.root, image_path, f"{where}: image {image!r}:")
                image_id = check_id(Path(os.path.relpath(image_path, self.root)).with_suffix("").as_posix()).as_posix()
            except UnsafePathError as error:
                image_id, image_path = image, None
                self.rejected[image_id] = str(error)
            if image_id in self._labels:
                raise ConfigError(f"{where}: image id {image_id!r} is listed more than once")
            self._paths[image_id] = image_path
            self._labels[image_id] = self._class_ids(names, where)
        if missing:
            raise ConfigError(f"{source}: {len(missing)} listed images are not in {self.root}: {listed(missing)}")

    def _class_ids(self, names: list[str], where: str) -> tuple[int, ...]:
        """Sorted class ids of an entry's names; ``background`` is no image label."""
        try:
            class_ids = {self.prompts.class_id(name, where=f"{where}: ") for name in names}
        except ConfigError as error:
            if self._own_prompts:
                raise
            raise ConfigError(f"{error} (the other names are VOC classes; for classes of your own, "
                              "declare the list with --classes or --prompts)") from None  # fmt: skip
        if 0 in class_ids:
            raise ConfigError(f"{where}: 'background' is not an image label; list the objects in the image")
        return tuple(sorted(class_ids))

    def _find_image(self, image: str) -> Path | None:
        if "\x00" in image:
            raise UnsafePathError(f"image {image!r} holds a NUL character")
        candidate = self.root / image
        if candidate.is_file():
            return candidate
        if not candidate.suffix:
            for suffix in IMAGE_SUFFIXES:
                for variant in (suffix, suffix.upper()):
                    if candidate.with_suffix(variant).is_file():
                        return candidate.with_suffix(variant)
        return None

    def ids(self) -> list[str]:
        return list(self._labels)

    def image_path(self, image_id: str) -> Path:
        path = self._paths[image_id]
        if path is None:
            raise UnsafePathError(self.rejected[image_id])
        return path

    def classes(self, image_id: str) -> tuple[int, ...]:
        return self._labels[image_id]

    def gt_path(self, image_id: str) -> Path | None:
        if self.gt_dir is None:
            return None
        candidate = id_path(self.gt_dir, image_id, ".png")
        return candidate if candidate.is_file() else None


def read_csv_labels(path: Path) -> list[tuple[str, str, list[str]]]:
    """Entries ``(where, image, class names)`` of a CSV labels file."""
    entries = []
    text = read_user_text(path, "labels file")
    for line_number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if line_number == 1 and cells[0].lower() in HEADER_WORDS:
            continue
        names = [name.strip() for cell in cells[1:] for name in cell.split(";") if name.strip()]
        entries.append((f"{path}:{line_number}", cells[0], names))
    return entries


def read_json_labels(path: Path) -> list[tuple[str, str, list[str]]]:
    """Entries ``(where, image, class names)`` of a JSON labels file."""
    try:
        data: Any = json.loads(read_user_text(path, "labels file"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"labels file {path} is not valid JSON: {error}") from error
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list) and all(isinstance(item, dict) and "image" in item for item in data):
        items = [(item["image"], item.get("labels", [])) for item in data]
    else:
        raise ConfigError(f"labels file {path}: expected {{image: [names]}} or [{{image, labels}}]")
    entries = []
    for image, names in items:
        if isinstance(names, str):
            names = names.split(";")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"labels file {path}: labels of {image} must be a list of class names")
        entries.append((str(path), str(image), [n.strip() for n in names if n.strip()]))
    return entries


CLASS_FOLDERS = "folders"
"""``--labels folders``: each image's class is the name of its top folder (``cat/001.jpg``)."""


def class_folder_entries(root: Path) -> list[tuple[str, str, list[str]]]:
    """Entries of a one-folder-per-class layout: every image under ``root/<class>/``."""
    entries = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        hidden = any(part.startswith(".") for part in relative.parts)
        if len(relative.parts) > 1 and not hidden and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            entries.append((str(path), relative.as_posix(), [relative.parts[0]]))
    return entries


def prompts_for_names(names: list[str], source: str) -> PromptSet:
    """The VOC prompt set when any name is one of its classes, a VOC synonym or looks like a
    misspelt VOC class (then every other name must be a VOC class too, and VOC's error names the
    closest ones: a typo among VOC names must not become a class of its own and renumber the
    rest); otherwise a prompt set of these names (sorted, VOC's templates and background words)."""
    voc = load_prompts("voc")
    known = {name_key(name) for name in voc.class_names[1:]}
    synonyms = {name_key(synonym) for entry in voc.classes[1:] for synonym in entry.synonyms}
    keys = {name_key(name): name.strip() for name in names if name.strip()}
    unknown = set(keys) - known - {"background"}
    near_voc = any(key in synonyms or difflib.get_close_matches(key, known, n=1, cutoff=0.8) for key in unknown)
    if not unknown or near_voc or set(keys) & known:
        return voc
    own = [keys[key] for key in sorted(keys) if key != "background"]
    return voc.with_class_names(own, f"the classes named in {source}")


FOLDER = Component(
    "dataset", "folder", "Your own images (--root DIR) with --labels FILE (CSV or JSON) or --labels none.",
    "pseudolabel.datasets.folder:open_folder", own_classes=True,
)  # fmt: skip


def open_folder(root: Path, split: str | None, prompts: PromptSet | None, labels_file: Path | None,
                gt_dir: Path | None, max_image_pixels: int | None) -> Dataset:  # fmt: skip
    """The images under ``root`` with their labels file; ``none``: every image, no labels."""
    if labels_file is None:
        raise ConfigError("--dataset folder needs --labels FILE (CSV or JSON: image -> class names)")
    return FolderDataset(root, None if str(labels_file) == "none" else labels_file, prompts, max_image_pixels, gt_dir)

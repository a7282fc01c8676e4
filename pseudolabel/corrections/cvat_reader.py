"""CVAT "Segmentation mask 1.1" (a folder or the .zip CVAT downloads): ``labelmap.txt`` names
each colour; ``SegmentationClass/<id>.png`` holds one colour per pixel. ``unsure`` reads as 255."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.masks import IGNORE_INDEX
from pseudolabel.core.prompts import PromptSet
from pseudolabel.corrections.canvas import Canvas, Unreadable
from pseudolabel.export.label_studio import UNSURE_LABEL

CLASS_FOLDER = "SegmentationClass"


def _files(source: Path) -> dict[str, bytes]:
    """POSIX path -> bytes of every file of the folder or zip."""
    if source.is_dir():
        return {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    try:
        with zipfile.ZipFile(source) as archive:
            return {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    except (OSError, zipfile.BadZipFile) as error:
        raise ConfigError(f"cannot read the CVAT export {source}: {error}") from error


def colour_classes(labelmap: str, prompts: PromptSet, where: str) -> dict[tuple[int, int, int], int]:
    """(r, g, b) -> class id from ``labelmap.txt`` lines ``name:r,g,b:parts:actions``."""
    colours = {}
    for number, line in enumerate(labelmap.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = tuple(int(v) for v in rest.split(":")[0].split(","))
        except ValueError as error:
            raise ConfigError(f"{where} line {number}: no r,g,b colour in {line!r}") from error
        if len(rgb) != 3:
            raise ConfigError(f"{where} line {number}: no r,g,b colour in {line!r}")
        colours[rgb] = IGNORE_INDEX if name == UNSURE_LABEL else prompts.class_id(name, f"{where} line {number}: ")
    return colours


def read_cvat(source: Path, prompts: PromptSet) -> Iterator[Canvas | Unreadable]:
    """One canvas per ``SegmentationClass`` PNG (the id is its path there, without suffix)."""
    files = _files(source)
    root = next((PurePosixPath(n).parent for n in files if PurePosixPath(n).name == "labelmap.txt"), None)
    if root is None:
        raise ConfigError(f"{source} has no labelmap.txt (CVAT's Segmentation mask 1.1 export has one)")
    labelmap = files[str(root / "labelmap.txt")].decode("utf-8", errors="replace")
    colours = colour_classes(labelmap, prompts, f"{source}: labelmap.txt")
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], np.int64)
    order = np.argsort(keys)
    keys, values = keys[order], np.array(list(colours.values()), np.uint8)[order]
    prefix = f"{root / CLASS_FOLDER}/".removeprefix("./")
    for name in sorted(n for n in files if n.startswith(prefix) and n.lower().endswith(".png")):
        image_id = PurePosixPath(name[len(prefix) :]).with_suffix("").as_posix()
        try:
            with Image.open(io.BytesIO(files[name])) as image:
                rgb = np.asarray(image.convert("RGB")).astype(np.int64)
        except OSError as error:
            yield Unreadable(image_id, f"cannot read {name}: {error}")
            continue
        pixel_keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        slots = np.clip(np.searchsorted(keys, pixel_keys), 0, len(keys) - 1)
        known = keys[slots] == pixel_keys
        if not known.all():
            r, g, b = rgb[~known][0]
            yield Unreadable(image_id, f"{name}: colour ({r}, {g}, {b}) is not in labelmap.txt")
            continue
        canvas = Canvas(image_id, *pixel_keys.shape)
        canvas.labels = values[slots]
        yield canvas

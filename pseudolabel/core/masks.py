"""Label masks on disk: 8-bit palette PNGs in the PASCAL VOC colormap, 255 = ignore/unsure.

Reading accepts what users actually have: palette ("P") PNGs, plain 8/16-bit grey PNGs whose
values are class ids, and RGB renderings whose colours are mapped back through the VOC
colormap. Writing is always a "P" PNG, written atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from pseudolabel.core.errors import MaskError
from pseudolabel.core.files import atomic_write_bytes

IGNORE_INDEX = 255
"""Label value for pixels that are ignored in ground truth or unsure in pseudo-labels."""


def voc_colormap(num_entries: int = 256) -> np.ndarray:
    """The standard PASCAL VOC bit-interleaved colormap.

    Returns:
        uint8 array [num_entries, 3]; entry i is the RGB colour of label i
        (0 = black background, 255 = (224, 224, 192)).
    """
    colours = np.zeros((num_entries, 3), dtype=np.uint8)
    for index in range(num_entries):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        colours[index] = (red, green, blue)
    return colours


VOC_COLORMAP = voc_colormap()
_VOC_KEYS = (
    (VOC_COLORMAP[:, 0].astype(np.int64) << 16) | (VOC_COLORMAP[:, 1].astype(np.int64) << 8) | VOC_COLORMAP[:, 2]
)
_VOC_INDEX_OF_KEY = {int(key): index for index, key in enumerate(_VOC_KEYS)}


def encode_mask_png(labels: np.ndarray) -> bytes:
    """Encode a label map as a VOC-palette PNG.

    Args:
        labels: uint8 [H, W] class ids, 255 for ignore/unsure.
    """
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be a uint8 [H, W] array, got {labels.dtype} {labels.shape}")
    image = Image.fromarray(np.ascontiguousarray(labels))
    image.putpalette(VOC_COLORMAP.tobytes())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_mask(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write ``labels`` (uint8 [H, W]) to ``path`` as a VOC-palette PNG, atomically."""
    atomic_write_bytes(path, encode_mask_png(labels))


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask file as class ids.

    Returns:
        uint8 [H, W]; values are whatever ids the file holds (range checks are the
        caller's, who knows the number of classes).

    Raises:
        MaskError: unreadable file, unsupported mode, 16-bit values above 255, or an RGB
            colour that is not in the VOC colormap.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _labels_from_image(image, path)
    except MaskError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise MaskError(f"cannot read mask {path}: {error}") from error


def _labels_from_image(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        return _labels_from_palette_image(image)
    if mode in ("L", "1"):
        return np.asarray(image, dtype=np.uint8)
    if mode == "LA":
        return np.asarray(image.getchannel("L"), dtype=np.uint8)
    if mode.startswith("I"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise MaskError(
                f"mask {path} is a {mode} image with values {values.min()}..{values.max()}; "
                "class ids must be 0..254 (255 = ignore)"
            )
        return values.astype(np.uint8)
    if mode in ("RGB", "RGBA"):
        return colours_to_labels(np.asarray(image.convert("RGB")), path)
    raise MaskError(f"mask {path} has unsupported image mode {mode}; save it as a palette or grey PNG")


def _labels_from_palette_image(image: Image.Image) -> np.ndarray:
    """Indices of a "P" image, mapped through colours when its palette is a reordered VOC one.

    If every colour the image uses is a VOC colour, the VOC index of that colour is the label
    (this equals the stored index for a standard VOC palette). Otherwise the palette is a
    custom one (grey ramp, other tool's colours) and the stored indices are the labels.
    """
    indices = np.asarray(image, dtype=np.uint8)
    palette = np.zeros((256, 3), dtype=np.uint8)
    raw = np.frombuffer(bytes(image.getpalette() or []), dtype=np.uint8)
    raw = raw[: (raw.size // 3) * 3].reshape(-1, 3)[:256]
    palette[: len(raw)] = raw
    used = np.unique(indices)
    if np.array_equal(palette[used], VOC_COLORMAP[used]):
        return indices
    used_keys = (palette[used, 0].astype(np.int64) << 16) | (palette[used, 1].astype(np.int64) << 8) | palette[used, 2]
    voc_indices = [_VOC_INDEX_OF_KEY.get(int(key)) for key in used_keys]
    if any(index is None for index in voc_indices):
        return indices
    lookup = np.arange(256, dtype=np.uint8)
    lookup[used] = np.asarray(voc_indices, dtype=np.uint8)
    return lookup[indices]


def colours_to_labels(rgb: np.ndarray, path: str | os.PathLike[str] = "<array>") -> np.ndarray:
    """Map an RGB rendering of a mask back to class ids through the VOC colormap.

    Args:
        rgb: uint8 [H, W, 3].
        path: named in the error message.

    Raises:
        MaskError: a colour that is not in the colormap (names the colour and its pixel count).
    """
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    unique_keys, inverse = np.unique(keys.ravel(), return_inverse=True)
    labels_of_unique = np.empty(len(unique_keys), dtype=np.uint8)
    for position, key in enumerate(unique_keys):
        index = _VOC_INDEX_OF_KEY.get(int(key))
        if index is None:
            colour = ((int(key) >> 16) & 255, (int(key) >> 8) & 255, int(key) & 255)
            count = int(np.count_nonzero(inverse == position))
            raise MaskError(
                f"mask {path} has colour {colour} ({count} pixels) that is not in the VOC colormap; "
                "save masks as palette PNGs or use the VOC colours"
            )
        labels_of_unique[position] = index
    return labels_of_unique[inverse].reshape(keys.shape)


def mask_class_ids(mask: np.ndarray, num_classes: int, path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Class ids present in a label map, without background and 255.

    Raises:
        MaskError: a value that is not a class id (names the file and the values).
    """
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    bad = [int(v) for v in present if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise MaskError(f"mask {path} holds values {bad} that are not class ids (0..{num_classes - 1} or 255)")
    return tuple(int(v) for v in present if 0 < v < num_classes)

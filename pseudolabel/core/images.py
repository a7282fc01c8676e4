"""Decode any image a user may have into an RGB uint8 array.

EXIF orientation is applied; grey, palette, RGBA/LA (composited over white), CMYK, YCbCr and
16-bit images become 8-bit RGB. Pillow's own decompression-bomb limit is replaced by an
explicit pixel limit that the user can raise (``--max-image-pixels``).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from pseudolabel.core.errors import ImageLoadError
from pseudolabel.core.files import atomic_write_bytes

DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""Pillow's default warning limit (about 9,459 x 9,459): larger images need an explicit opt-in."""
DEFAULT_MAX_SIDE = 1024
"""Longest side (pixels) a labeler's model sees by default: VOC (500) and COCO (640) images pass
untouched, a 12 MP photo is scored at 1024 x 768 and its scores resized back."""


@contextmanager
def _without_pillow_limit() -> Iterator[None]:
    """Lift Pillow's process-wide pixel limit while one file is opened (load_rgb checks its own,
    which the user can raise); other code in the process keeps Pillow's."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def load_rgb(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as RGB.

    Args:
        path: image file (any format Pillow reads).
        max_pixels: refuse images with more pixels than this (None: no limit).

    Returns:
        uint8 [H, W, 3], upright after EXIF orientation.

    Raises:
        ImageLoadError: missing, corrupt or truncated file, or too many pixels.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt files: they decode or fail below
            return _decode(path, max_pixels)
    except ImageLoadError:
        raise
    except FileNotFoundError as error:
        raise ImageLoadError(f"image {path} does not exist") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(f"cannot decode image {path}: {error}") from error


def _decode(path: Path, max_pixels: int | None) -> np.ndarray:
    with _without_pillow_limit(), Image.open(path) as image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageLoadError(
                f"image {path} is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{max_pixels:,}; raise it with --max-image-pixels if the file is trusted"
            )
        image.load()
        return to_rgb_array(ImageOps.exif_transpose(image))


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to uint8 [H, W, 3]."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return np.repeat(_scale_to_uint8(np.asarray(image), mode)[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale single-channel high-bit-depth values to 0..255.

    16-bit images (and 32-bit integer images whose values fit 16 bits, which is how Pillow
    opens 16-bit PNGs) are divided by 257; float images in [0, 1] are multiplied by 255.
    """
    values = values.astype(np.float64)
    if mode == "F" and values.size and values.max() <= 1.0:
        scaled = values * 255.0
    elif values.size and values.max() > 65535:
        scaled = values / (values.max() / 255.0)
    else:
        scaled = values / 257.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def write_image(path: str | os.PathLike[str], pixels: np.ndarray, fmt: str = "PNG", **options: object) -> None:
    """Write uint8 ``pixels`` ([H, W, 3] RGB or [H, W] grey) as a ``fmt`` file (Pillow ``options``,
    e.g. ``quality``), atomically."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, fmt, **options)
    atomic_write_bytes(path, buffer.getvalue())


def fitted_size(height: int, width: int, max_side: int) -> tuple[int, int] | None:
    """(width, height) with the longer side scaled down to ``max_side`` pixels, aspect kept;
    None when the image already fits."""
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return None
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """uint8 [H, W, 3] averaged down (area interpolation) so the longer side is at most ``max_side``
    pixels; the same array when it already fits."""
    size = fitted_size(*rgb.shape[:2], max_side)
    return rgb if size is None else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

"""Robust image decoding: odd modes become RGB, EXIF is applied, bad files say which and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pseudolabel.core.errors import ImageLoadError
from pseudolabel.core.images import load_rgb


def test_grey_image_becomes_three_equal_channels(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 90, np.uint8)).save(tmp_path / "g.png")
    rgb = load_rgb(tmp_path / "g.png")
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    assert (rgb == 90).all()


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    rgb = load_rgb(tmp_path / "a.png")
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    rgb = load_rgb(tmp_path / "c.jpg")
    assert rgb.shape == (4, 6, 3)
    assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60  # red


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(tmp_path / "d.png")
    rgb = load_rgb(tmp_path / "d.png")
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_palette_image_becomes_rgb(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1]], np.uint8))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.save(tmp_path / "p.png")
    assert load_rgb(tmp_path / "p.png")[0].tolist() == [[10, 20, 30], [200, 100, 50]]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)  # wide image, left half bright
    pixels[:, :20] = 250
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "r.jpg", exif=exif, quality=95)
    rgb = load_rgb(tmp_path / "r.jpg")
    assert rgb.shape == (40, 20, 3)  # upright: tall
    assert rgb[:20].mean() > 200 and rgb[20:].mean() < 50  # the bright half is now on top


def test_corrupt_and_truncated_images_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match=r"cannot decode image .*junk\.jpg"):
        load_rgb(tmp_path / "junk.jpg")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg"):
        load_rgb(tmp_path / "cut.jpg")


def test_missing_image_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match=r"nope\.jpg does not exist"):
        load_rgb(tmp_path / "nope.jpg")


def test_pixel_limit_guards_and_can_be_raised(tmp_path: Path) -> None:
    Image.new("L", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match=r"300x200 = 60,000 pixels, over the limit of 50,000.*--max-image-pixels"):
        load_rgb(tmp_path / "big.png", max_pixels=50_000)
    assert load_rgb(tmp_path / "big.png", max_pixels=60_000).shape == (200, 300, 3)
    assert load_rgb(tmp_path / "big.png", max_pixels=None).shape == (200, 300, 3)

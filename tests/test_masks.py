"""Palette PNG masks: colormap, round trips, the three input kinds, bad files, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pseudolabel.core.errors import MaskError
from pseudolabel.core.files import atomic_output
from pseudolabel.core.masks import VOC_COLORMAP, colours_to_labels, read_mask, write_mask


def test_voc_colormap_known_entries() -> None:
    assert VOC_COLORMAP[0].tolist() == [0, 0, 0]
    assert VOC_COLORMAP[1].tolist() == [128, 0, 0]  # aeroplane
    assert VOC_COLORMAP[15].tolist() == [192, 128, 128]  # person
    assert VOC_COLORMAP[255].tolist() == [224, 224, 192]  # ignore
    assert len({tuple(c) for c in VOC_COLORMAP.tolist()}) == 256  # one colour per index


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 21, size=(17, 23)).astype(np.uint8)
    labels[0, :5] = 255
    write_mask(tmp_path / "m.png", labels)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), labels)


def test_grey_and_rgb_masks_read_as_the_same_ids(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 15], [20, 255, 8]], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "grey.png")
    Image.fromarray(VOC_COLORMAP[labels]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png"), labels)
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), labels)


def test_palette_image_with_reordered_voc_palette_is_read_by_colour(tmp_path: Path) -> None:
    # An editor re-saved the mask: index 0 now holds person's colour, index 1 black.
    indices = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    image = Image.fromarray(indices)
    palette = [192, 128, 128, 0, 0, 0] + [0] * (256 * 3 - 6)
    image.putpalette(palette)
    image.save(tmp_path / "reordered.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "reordered.png"), [[15, 0], [0, 0]])


def test_palette_image_with_grey_palette_keeps_its_indices(tmp_path: Path) -> None:
    indices = np.array([[0, 3], [7, 255]], dtype=np.uint8)
    image = Image.fromarray(indices)
    image.putpalette([value for i in range(256) for value in (i, i, i)])
    image.save(tmp_path / "greypal.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "greypal.png"), indices)


def test_unknown_colour_names_file_and_colour(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(MaskError, match=r"odd\.png has colour \(1, 2, 3\) \(1 pixels\)"):
        read_mask(tmp_path / "odd.png")
    with pytest.raises(MaskError):
        colours_to_labels(rgb)


def test_sixteen_bit_mask_with_large_values_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 300]], dtype=np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(MaskError, match=r"deep\.png .*values 0\.\.300"):
        read_mask(tmp_path / "deep.png")
    Image.fromarray(np.array([[0, 15]], dtype=np.uint16)).save(tmp_path / "ok16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "ok16.png"), [[0, 15]])


def test_corrupt_mask_is_a_mask_error(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(MaskError, match=r"cannot read mask .*broken\.png"):
        read_mask(tmp_path / "broken.png")


def test_failed_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out" / "a.png"
    write_mask(target, np.ones((3, 3), np.uint8))
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_output(target) as temp:
        temp.write_bytes(b"half a png")
        raise RuntimeError("killed")
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]


def test_write_mask_refuses_non_label_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_mask(tmp_path / "x.png", np.zeros((3, 3), dtype=np.int64))
    assert not list(tmp_path.iterdir())

"""Build the bundled example dataset (VOC layout) from scikit-image's sample photos.

Run from the repository root (needs scikit-image, which is not a dependency of the tool):

    pip install scikit-image && python examples/make_voc_example.py

Writes examples/voc/VOC2012/ (JPEGImages, SegmentationClass, Annotations,
ImageSets/Segmentation/{train,val}.txt), examples/voc/coarse_masks/ (the GT objects dilated by
8 px: a stand-in for pseudo-labels to score) and examples/folder_labels.csv.

The GT masks of the three photos are coarse hand-traced polygons (a few pixels off along
edges), with a 5 px band of 255 along every class boundary as in VOC. The horse image is a
composite whose mask is exact. The files are committed; this script documents how they were
made and remakes them (seeded, so the same pixels every run).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import skimage.io
from PIL import Image, ImageDraw

from pseudolabel.core.masks import IGNORE_INDEX, write_mask
from pseudolabel.core.prompts import load_prompts

OUT = Path(__file__).resolve().parent / "voc"
ROOT = OUT / "VOC2012"
CLASS = {name: index for index, name in enumerate(load_prompts("voc").class_names)}
BAND_PX = 5
COARSE_DILATION_PX = 8
SEED = 2026


def polygon_mask(size: tuple[int, int], points: list[tuple[float, float]]) -> np.ndarray:
    """bool [H, W] of a filled polygon; ``size`` = (width, height)."""
    canvas = Image.new("L", size, 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def disc_mask(size: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """bool [H, W] of a filled disc; ``size`` = (width, height)."""
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


def cat_image() -> tuple[np.ndarray, np.ndarray]:
    rgb = skimage.data.chelsea()
    height, width = rgb.shape[:2]
    cat = polygon_mask(
        (width, height),
        [(0, 0), (395, 0), (385, 35), (365, 100), (362, 150), (348, 205), (330, 250), (335, 300), (0, 300)],
    )
    return rgb, np.where(cat, CLASS["cat"], 0).astype(np.uint8)


def person_image() -> tuple[np.ndarray, np.ndarray]:
    rgb = skimage.data.astronaut()
    height, width = rgb.shape[:2]
    person = polygon_mask(
        (width, height),
        [
            (225, 15), (265, 18), (295, 45), (300, 95), (292, 150), (305, 200), (330, 250), (355, 300),
            (362, 345), (320, 360), (290, 400), (278, 450), (280, 512), (25, 512), (20, 420), (25, 320),
            (45, 260), (85, 225), (115, 195), (150, 170), (160, 120), (155, 60), (180, 30),
        ],
    )  # fmt: skip
    return rgb, np.where(person, CLASS["person"], 0).astype(np.uint8)


def motorbike_image() -> tuple[np.ndarray, np.ndarray]:
    path = Path(skimage.data.__file__).parent / "motorcycle_left.png"
    rgb = skimage.io.imread(path)[..., :3]
    height, width = rgb.shape[:2]
    size = (width, height)
    body = polygon_mask(
        size,
        [
            (92, 195), (150, 162), (250, 165), (350, 185), (420, 150), (490, 150), (500, 120), (335, 135),
            (330, 115), (410, 112), (500, 78), (545, 95), (585, 120), (570, 170), (548, 215), (600, 270),
            (560, 330), (540, 350), (470, 360), (430, 390), (340, 410), (335, 435), (325, 435), (320, 390),
            (250, 330), (190, 260), (110, 245), (95, 225),
        ],
    )  # fmt: skip
    bike = body | disc_mask(size, (600, 360), 88) | disc_mask(size, (200, 318), 82)
    labels = np.where(bike, CLASS["motorbike"], 0).astype(np.uint8)
    new_size = (500, round(height * 500 / width))
    rgb = np.asarray(Image.fromarray(rgb).resize(new_size, Image.Resampling.LANCZOS))
    labels = np.asarray(Image.fromarray(labels).resize(new_size, Image.Resampling.NEAREST))
    return rgb, labels


def horse_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A brown horse silhouette (scikit-image's horse) on sky and grass: an exact mask."""
    width, height = 500, 375
    silhouette = ~skimage.data.horse()
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    sky = (1 - rows) * np.array([110, 160, 220]) + rows * np.array([225, 235, 245])
    rgb = np.broadcast_to(sky, (height, width, 3)).copy()
    grass = skimage.data.grass()[:height, :width].astype(np.float64) / 255.0
    horizon = 230
    tint = np.array([60, 140, 50])[None, None, :] * (0.6 + 0.8 * grass[horizon:, :, None])
    rgb[horizon:] = tint[: height - horizon]
    top, left = 30, 50
    horse = np.zeros((height, width), dtype=bool)
    horse[top : top + silhouette.shape[0], left : left + silhouette.shape[1]] = silhouette
    shade = 0.85 + 0.3 * rng.random((height, width, 1))
    rgb[horse] = (np.array([125, 78, 42]) * shade)[horse]
    labels = np.where(horse, CLASS["horse"], 0).astype(np.uint8)
    return np.clip(rgb, 0, 255).astype(np.uint8), labels


def add_boundary_band(labels: np.ndarray, width: int = BAND_PX) -> np.ndarray:
    """Mark pixels within ``width // 2`` px of a class boundary as 255, as VOC GT does."""
    kernel = np.ones((width, width), dtype=np.uint8)
    near_edge = cv2.dilate(labels, kernel) != cv2.erode(labels, kernel)
    return np.where(near_edge, IGNORE_INDEX, labels).astype(np.uint8)


def coarse_version(labels: np.ndarray) -> np.ndarray:
    """Objects dilated by COARSE_DILATION_PX: a plausible, too-fat pseudo-label."""
    size = 2 * COARSE_DILATION_PX + 1
    return cv2.dilate(labels, np.ones((size, size), dtype=np.uint8))


def write_annotation(path: Path, image_id: str, labels: np.ndarray) -> None:
    """A minimal VOC Annotations XML with one object (name + bounding box) per class."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ElementTree.SubElement(root, "size")
    for tag, value in (("width", labels.shape[1]), ("height", labels.shape[0]), ("depth", 3)):
        ElementTree.SubElement(size, tag).text = str(value)
    names = {index: name for name, index in CLASS.items()}
    for class_id in np.unique(labels):
        if class_id == 0:
            continue
        ys, xs = np.nonzero(labels == class_id)
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = names[int(class_id)]
        box = ElementTree.SubElement(obj, "bndbox")
        for tag, value in (
            ("xmin", xs.min() + 1),
            ("ymin", ys.min() + 1),
            ("xmax", xs.max() + 1),
            ("ymax", ys.max() + 1),
        ):
            ElementTree.SubElement(box, tag).text = str(int(value))
    ElementTree.indent(root)
    path.write_bytes(ElementTree.tostring(root, encoding="utf-8") + b"\n")


def main() -> None:
    rng = np.random.default_rng(SEED)
    images = {
        "2026_000001": cat_image(),
        "2026_000002": person_image(),
        "2026_000003": motorbike_image(),
        "2026_000004": horse_image(rng),
    }
    for folder in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (ROOT / folder).mkdir(parents=True, exist_ok=True)
    (OUT / "coarse_masks").mkdir(parents=True, exist_ok=True)
    for image_id, (rgb, labels) in images.items():
        Image.fromarray(rgb).save(ROOT / "JPEGImages" / f"{image_id}.jpg", quality=88)
        write_mask(ROOT / "SegmentationClass" / f"{image_id}.png", add_boundary_band(labels))
        write_mask(OUT / "coarse_masks" / f"{image_id}.png", coarse_version(labels))
        write_annotation(ROOT / "Annotations" / f"{image_id}.xml", image_id, labels)
    ids = list(images)
    (ROOT / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    (ROOT / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[1::2]) + "\n")
    names = {index: name for name, index in CLASS.items()}
    rows = ["image,labels"] + [
        f"{image_id}.jpg," + ";".join(names[int(c)] for c in np.unique(labels) if c)
        for image_id, (_, labels) in images.items()
    ]
    (OUT.parent / "folder_labels.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()

"""Property-based tests (Hypothesis): whatever bytes or text arrive as an image, a mask, a labels
file, a prompt set or a config file, the tool ends in a result or in its own one-line error,
never in a traceback. Derandomised, so CI sees the same 1,100 cases every run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import PseudolabelError
from pseudolabel.core.images import load_rgb
from pseudolabel.core.masks import read_mask
from pseudolabel.core.prompts import load_prompts
from pseudolabel.datasets.folder import FolderDataset

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


def _encoded(mode: str, fmt: str, size: tuple[int, int] = (9, 7), **options) -> bytes:
    rng = np.random.default_rng(len(mode) + len(fmt))
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _exif_rotated_jpeg() -> bytes:
    image = Image.new("RGB", (9, 7), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


SEEDS = [
    _encoded("RGB", "PNG"), _encoded("L", "PNG"), _encoded("RGBA", "PNG"), _encoded("P", "PNG"),
    _encoded("I;16", "PNG"), _encoded("1", "PNG"), _encoded("LA", "PNG"), _encoded("RGB", "JPEG"),
    _encoded("CMYK", "JPEG"), _encoded("L", "JPEG"), _encoded("RGB", "GIF"), _encoded("RGB", "BMP"),
    _encoded("RGB", "TIFF"), _encoded("F", "TIFF"), _encoded("RGB", "WEBP"), _exif_rotated_jpeg(),
]  # fmt: skip


@st.composite
def mangled_files(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid file of some kind, then truncated, overwritten in places or padded, or plain noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        data[position : position + 1] = draw(st.binary(min_size=1, max_size=3))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(FUZZ, max_examples=350)
@given(data=mangled_files(SEEDS), name=st.sampled_from(["x.png", "x.jpg", "x.gif", "x"]))
def test_any_image_bytes_give_an_rgb_array_or_a_one_line_error(tmp_path_factory, data: bytes, name: str) -> None:
    path = tmp_path_factory.mktemp("img") / name
    path.write_bytes(data)
    try:
        rgb = load_rgb(path, max_pixels=1_000_000)
    except PseudolabelError as error:
        assert "\n" not in str(error)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


MASK_SEEDS = [_encoded("P", "PNG"), _encoded("L", "PNG"), _encoded("RGB", "PNG"), _encoded("I;16", "PNG")]


@settings(FUZZ, max_examples=250)
@given(data=mangled_files(MASK_SEEDS))
def test_any_mask_bytes_give_a_label_map_or_a_one_line_error(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("mask") / "m.png"
    path.write_bytes(data)
    try:
        labels = read_mask(path)
    except PseudolabelError as error:
        assert "\n" not in str(error)
        return
    assert labels.dtype == np.uint8 and labels.ndim == 2


NAMES = ["a.jpg", "a", "b.png", "missing.jpg", "../x.jpg", "/etc/passwd", "sub/c.jpg", "a.jpg", "", "é.jpg", "a\x00"]
CLASSES = ["cat", "dog", "Dining Table", "kitten", "", "pottedplant", "person;cat", "background", " cat "]


@st.composite
def labels_csv(draw: st.DrawFn) -> bytes:
    """CSV labels files with BOMs, blank lines, comments, quoted commas and odd encodings."""
    lines = [draw(st.sampled_from(["image,labels", "#c", "", "file"]))]
    for _ in range(draw(st.integers(0, 5))):
        image = draw(st.sampled_from(NAMES))
        names = draw(st.lists(st.sampled_from(CLASSES), max_size=3))
        quoted = draw(st.booleans())
        cells = [image, *([f'"{",".join(names)}"'] if quoted else names)]
        lines.append(",".join(cells) if draw(st.integers(0, 6)) else draw(st.text(max_size=20)))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(NAMES + CLASSES),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from([*NAMES, "image", "labels"]), children, max_size=3)
    ),
    max_leaves=8,
)


def _folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for name in ("a.jpg", "b.png", "sub/c.jpg", "é.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3)).save(root / name)
    return root


@settings(FUZZ, max_examples=200)
@given(data=labels_csv())
def test_any_csv_labels_file_gives_a_dataset_or_a_one_line_error(tmp_path_factory, data: bytes) -> None:
    root = _folder(tmp_path_factory)
    (root.parent / "labels.csv").write_bytes(data)
    _dataset_or_error(root, root.parent / "labels.csv")


@settings(FUZZ, max_examples=150)
@given(value=json_values, raw=st.one_of(st.none(), st.text(max_size=30)))
def test_any_json_labels_file_gives_a_dataset_or_a_one_line_error(tmp_path_factory, value, raw) -> None:
    root = _folder(tmp_path_factory)
    (root.parent / "labels.json").write_text(json.dumps(value) if raw is None else raw)
    _dataset_or_error(root, root.parent / "labels.json")


def _dataset_or_error(root: Path, labels: Path) -> None:
    try:
        dataset = FolderDataset(root, labels)
    except PseudolabelError as error:
        assert "\n" not in str(error)
        return
    for image_id in dataset.ids():
        try:
            sample = dataset.load(image_id)
        except PseudolabelError as error:
            assert image_id in dataset.rejected and "\n" not in str(error)
            continue
        assert sample.rgb.shape == (3, 4, 3) and all(0 < c < dataset.num_classes for c in sample.classes)


VOC_PROMPTS = yaml.safe_load((ROOT / "prompts" / "voc.yaml").read_text())
prompt_documents = st.fixed_dictionaries(
    {},
    optional={
        "classes": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from([*CLASSES, None, 3])},
                optional={"synonyms": st.lists(st.sampled_from(CLASSES), max_size=3) | st.text(max_size=5)},
            )
            | st.sampled_from(CLASSES),
            max_size=4,
        ),
        "background": st.lists(st.text(max_size=8), max_size=3) | st.integers(),
        "cam_template": st.sampled_from(["a clean origami {}.", "no braces", "{} {}", "", None]),
        "forward_templates": st.lists(st.sampled_from(["a photo of a {}.", "x"]), max_size=2) | st.none(),
    },
)


@settings(FUZZ, max_examples=100)
@given(document=prompt_documents, from_voc=st.booleans(), raw=st.one_of(st.none(), st.text(max_size=40)))
def test_any_prompt_yaml_gives_a_prompt_set_or_a_one_line_error(tmp_path_factory, document, from_voc, raw) -> None:
    path = tmp_path_factory.mktemp("prompts") / "p.yaml"
    path.write_text(raw if raw is not None else yaml.safe_dump({**(VOC_PROMPTS if from_voc else {}), **document}))
    try:
        prompts = load_prompts(path)
    except PseudolabelError as error:
        assert "\n" not in str(error)
        return
    assert prompts.class_names[0] == "background" and len(set(prompts.class_names)) == prompts.num_classes


config_documents = st.dictionaries(
    st.sampled_from(
        ["check-images", "check_images", "split", "root", "dataset", "inspect", "generate", "bogus", "command"]
    ),
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from(["train", "voc", "x", "../.."])
    | st.lists(st.integers(), max_size=2),
    max_size=4,
)


@settings(FUZZ, max_examples=100)
@given(document=config_documents, raw=st.one_of(st.none(), st.text(max_size=40)))
def test_any_config_yaml_runs_or_stops_with_a_one_line_error(tmp_path_factory, document, raw) -> None:
    path = tmp_path_factory.mktemp("config") / "c.yaml"
    path.write_text(raw if raw is not None else yaml.safe_dump(document))
    args = ["inspect", "--config", str(path), "--dataset", "voc", "--root", str(ROOT / "examples" / "voc" / "VOC2012")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 1, 2), result.output
    assert ("internal error" not in result.output and not isinstance(result.exception, Exception | None)) or (
        result.exception is None or isinstance(result.exception, SystemExit)
    ), result.output

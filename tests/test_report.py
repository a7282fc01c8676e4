"""The HTML report: its numbers equal `score`'s, and a real browser (headless Chromium, from
file://, no network) shows it without console errors, loads every thumbnail, sorts the image
table worst first, and renders a page that is not blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.masks import read_mask

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_VOC = ROOT / "examples" / "voc" / "VOC2012"
COARSE = ROOT / "examples" / "voc" / "coarse_masks"
runner = CliRunner()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report comparing the coarse example masks with their CRF refinement."""
    tmp = tmp_path_factory.mktemp("report")
    refined = runner.invoke(app, ["refine", "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--masks", str(COARSE),
                                  "--refine", "crf", "--out", str(tmp / "crf"), "--num-workers", "0"])  # fmt: skip
    assert refined.exit_code == 0, refined.output
    args = ["report", "--pred", str(COARSE), "--pred", str(tmp / "crf"), "--dataset", "voc", "--root", str(EXAMPLE_VOC)]
    made = runner.invoke(app, [*args, "--out", str(tmp / "report"), "--worst", "3", "--workers", "1"])
    assert made.exit_code == 0, made.output
    return tmp / "report"


def _score(pred: Path, tmp: Path) -> dict:
    out = tmp / f"{pred.name}.json"
    args = ["score", "--pred", str(pred), "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--json", str(out)]
    result = runner.invoke(app, [*args, "--per-image", str(tmp / f"{pred.name}.csv")])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def _page_data(page: str) -> dict:
    return json.loads(re.search(r"<script type='application/json' id='data'>(.*?)</script>", page).group(1))


def test_report_numbers_equal_the_score_command(report: Path, tmp_path: Path) -> None:
    page = (report / "index.html").read_text()
    coarse, crf = _score(COARSE, tmp_path), _score(report.parent / "crf", tmp_path)
    for figures, name in ((coarse, "coarse_masks"), (crf, "crf")):
        row = re.search(rf"<tr><th>{name}</th>(.*?)</tr>", page).group(1)
        cells = re.findall(r"<td>([-0-9.]+)", row)
        assert cells[:3] == [f"{100 * figures[k]:.2f}" for k in ("miou", "mbiou", "coverage")]
    assert f"({100 * (crf['miou'] - coarse['miou']):+.2f})" in page
    data = _page_data(page)
    assert data["predictions"] == ["coarse_masks", "crf"]
    expected = {row["id"]: row for row in coarse["per_image"]}
    for row in data["rows"]:
        assert row["by"]["coarse_masks"]["miou"] == pytest.approx(expected[row["id"]]["miou"])
        assert row["classes"] == [c for c, v in enumerate(expected[row["id"]]["iou"]) if v is not None]
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium: install the Debian package chromium (.ci/run does)")


def _browser(url: str, *flags: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=10000", *flags, url]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_real_browser_shows_the_report(report: Path, tmp_path: Path) -> None:
    url = (report / "index.html").as_uri()
    checked = _browser(url + "#check", "--dump-dom")
    status = re.search(r'<p id="status"([^>]*)>', checked.stdout).group(1)
    loaded = int(re.search(r'data-images-ok="(\d+)"', status).group(1))
    assert loaded == 6 and 'data-images-broken="0"' in status, status  # 3 worst images x 2 predictions
    console = [line for line in checked.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    worst_first = _browser(url + "#sort=miou", "--dump-dom")
    coarse = _score(COARSE, tmp_path)
    worst = min(coarse["per_image"], key=lambda row: row["miou"])["id"]
    assert f'data-first="{worst}"' in worst_first.stdout
    table = worst_first.stdout.split('id="images"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>([^<]+)</td>", table)
    assert rows[0] == worst and len(rows) == 4
    shot = tmp_path / "report.png"
    _browser(url, f"--screenshot={shot}", "--window-size=1280,2000")
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2000, 1280) and pixels.std() > 20  # not a blank page
    assert (pixels < 80).mean() > 0.01 and (pixels > 240).mean() > 0.3  # text and charts on a white page


def test_a_split_without_gt_shows_pictures_and_run_records_only(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        Image.new("RGB", (40, 30), (40 * index, 90, 10)).save(images / f"p{index}.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"p{i}.jpg,cat\n" for i in range(3)))
    masks = tmp_path / "masks"
    masks.mkdir()
    for index, unsure_rows in enumerate((0, 15, 3)):  # p1 is half unsure, p2 a tenth, p0 sure
        mask = np.full((30, 40), 8, np.uint8)
        mask[:unsure_rows] = 255
        Image.fromarray(mask).save(masks / f"p{index}.png")
    args = ["report", "--pred", str(masks), "--dataset", "folder", "--root", str(images), "--labels", str(labels)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "report"), "--worst", "2"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert "No GT masks for this split" in page and "id='images'" not in page
    assert "the 2 images with the most unsure pixels" in page
    assert (tmp_path / "report" / "review.txt").read_text().splitlines()[1:] == ["p1", "p2"]
    assert len(list((tmp_path / "report" / "thumbs" / "0").glob("*.jpg"))) == 2


def test_generate_report_flag_writes_the_runs_report(tmp_path: Path) -> None:
    from tiny_clip import write_tiny_config

    out = tmp_path / "cam"
    args = ["generate", "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--out", str(out), "--clip-weights", "random"]
    args += ["--clip-model", str(write_tiny_config(tmp_path)), "--device", "cpu", "--num-workers", "0", "--limit", "2"]
    result = runner.invoke(app, [*args, "--synonyms", "pole", "--report"])
    assert result.exit_code == 0, result.output
    page = (out / "report" / "index.html").read_text()
    assert f"report: {out / 'report' / 'index.html'}" in result.output
    assert "<td>cam_s</td>" in page and "POLE: chosen names" in page  # the run's own records
    assert "2 missing predictions" not in page and len(_page_data(page)["rows"]) == 4  # 2 missing count as unsure


def test_review_list_limits_report_and_export_to_the_images_to_check_first(tmp_path: Path) -> None:
    coarse = str(EXAMPLE_VOC.parent / "coarse_masks")
    args = ["--dataset", "voc", "--root", str(EXAMPLE_VOC)]
    result = runner.invoke(app, ["report", "--pred", coarse, *args, "--worst", "2",
                                 "--out", str(tmp_path / "report")])  # fmt: skip
    assert result.exit_code == 0, result.output
    review = tmp_path / "report" / "review.txt"
    listed_ids = [line for line in review.read_text().splitlines() if not line.startswith("#")]
    from reference_metrics import reference_scores

    per_image = {}
    for gt_path in sorted((EXAMPLE_VOC / "SegmentationClass").glob("*.png")):
        pair = (read_mask(gt_path), read_mask(EXAMPLE_VOC.parent / "coarse_masks" / gt_path.name))
        per_image[gt_path.stem] = reference_scores([pair], 21)["miou"]
    assert listed_ids == sorted(per_image, key=lambda image_id: (per_image[image_id], image_id))[:2]

    limited = runner.invoke(app, ["report", "--pred", coarse, *args, "--ids",
                                  str(review), "--out", str(tmp_path / "limited")])  # fmt: skip
    assert limited.exit_code == 0, limited.output
    page = (tmp_path / "limited" / "index.html").read_text()
    assert "voc train, 2 images" in page
    out = tmp_path / "review.json"
    export = runner.invoke(app, ["export", "--masks", coarse, *args, "--ids", str(review), "--format", "coco-rle",
                                 "--out", str(out)])  # fmt: skip
    assert export.exit_code == 0, export.output
    exported = json.loads((tmp_path / "review.json").read_text())["images"]
    everything = sorted(p.stem for p in (EXAMPLE_VOC / "JPEGImages").glob("*.jpg"))
    assert {Path(i["file_name"]).stem: i["id"] for i in exported} == {
        image_id: everything.index(image_id) + 1 for image_id in listed_ids
    }  # the whole split's positions
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("2026_000001\nnot_an_image\n")
    refused = runner.invoke(app, ["export", "--masks", coarse, *args, "--ids",
                                  str(wrong), "--format", "coco-rle", "--out", str(tmp_path / "no.json")])  # fmt: skip
    assert refused.exit_code == 1 and "--ids lists 1 id(s) that are not in the split: not_an_image" in refused.output

"""--max-side: big images are scored downscaled; masks, scores and instances keep the image's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from helpers import make_voc
from tiny_clip import write_tiny_config
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.instances import Instances
from pseudolabel.core.masks import read_mask
from pseudolabel.core.scoremaps import ScoreMaps, decode
from pseudolabel.datasets.base import Sample
from pseudolabel.runner.manifest import read_manifest
from pseudolabel.runner.per_image import ScoreRefineDecode


class SizeRecordingScorer:
    """Scores that vary smoothly over the image it is given, plus one instance; remembers sizes."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, sample: Sample, record) -> ScoreMaps:
        height, width = sample.rgb.shape[:2]
        self.seen.append((height, width))
        ramp = np.linspace(0, 1, width, dtype=np.float32)[None].repeat(height, 0)
        record.extras["instances"] = Instances(
            (ramp > 0.5)[None], np.array([sample.classes[0]]), np.array([0.9], np.float32)
        )
        return ScoreMaps(np.stack([1 - ramp, ramp]), (0, sample.classes[0]), ramp < 0.1)


def _sample(height: int, width: int) -> Sample:
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Sample("big", rgb, (8,), None)


def test_a_big_image_is_scored_at_max_side_and_labelled_at_full_size() -> None:
    scorer = SizeRecordingScorer()
    labelled = ScoreRefineDecode(scorer, 0.0, max_side=50)(_sample(120, 200))
    assert scorer.seen == [(30, 50)]
    assert labelled.record["model_input"] == [50, 30]
    assert labelled.label_map.shape == (120, 200) and labelled.scores.scores.shape == (2, 120, 200)
    # independently: the small scores upsampled bilinearly with pixel centres aligned
    small = torch.from_numpy(np.linspace(0, 1, 50, dtype=np.float32)[None].repeat(30, 0))
    expected = F.interpolate(small[None, None], size=(120, 200), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(labelled.scores.scores[1], expected, atol=1e-5)
    unsure = labelled.scores.unsure
    assert unsure.shape == (120, 200) and unsure[:, :16].all() and not unsure[:, 24:].any()
    expected_labels = decode(ScoreMaps(np.stack([1 - expected, expected]), (0, 8), unsure))
    assert (labelled.label_map == expected_labels).mean() > 0.99
    instances = labelled.record.extras["instances"]
    assert instances.masks.shape == (1, 120, 200) and instances.masks[0, :, 104:].all()
    assert not instances.masks[0, :, :96].any()


def test_an_image_within_max_side_is_scored_as_it_is() -> None:
    scorer = SizeRecordingScorer()
    sample = _sample(40, 50)
    labelled = ScoreRefineDecode(scorer, 0.0, max_side=50)(sample)
    assert scorer.seen == [(40, 50)] and "model_input" not in labelled.record
    whole = ScoreRefineDecode(SizeRecordingScorer(), 0.0)(sample)
    assert (labelled.label_map == whole.label_map).all()


def test_generate_max_side_keeps_the_mask_at_the_image_size(tmp_path: Path) -> None:
    mask = np.zeros((60, 90), np.uint8)
    mask[10:50, 20:70] = 8
    voc = make_voc(tmp_path, {"wide": mask})
    out = tmp_path / "out"
    args = ["generate", "--dataset", "voc", "--root", str(voc), "--out", str(out), "--clip-weights", "random"]
    args += ["--clip-model", str(write_tiny_config(tmp_path)), "--device", "cpu", "--num-workers", "0"]
    result = CliRunner().invoke(app, [*args, "--max-side", "45", "--save-scores", str(tmp_path / "scores")])
    assert result.exit_code == 0, result.output
    assert read_mask(out / "wide.png").shape == (60, 90)
    assert np.load(tmp_path / "scores" / "wide.npz")["scores"].shape[1:] == (60, 90)
    assert read_manifest(out / "manifest.jsonl")[0]["model_input"] == [45, 30]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2"), "--max-side", "8"])
    assert refused.exit_code == 1 and "--max-side must be 0 (full size) or at least 32" in refused.output

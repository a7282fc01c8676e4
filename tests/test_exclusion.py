"""ELSE-style exclusion and the zero-shot mode: formulas, prompts from the YAML, constructed cases, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_clip import tiny_clip, write_tiny_config
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.prompts import load_prompts
from pseudolabel.datasets import build_dataset
from pseudolabel.datasets.folder import FolderDataset
from pseudolabel.labelers.exclusion import (
    ClassExclusion,
    clipn_exclusion_probabilities,
    corrected_probabilities,
    inclusion_probabilities,
    vocabulary_exclusion_probabilities,
)
from pseudolabel.labelers.region_inputs import region_images
from pseudolabel.labelers.zero_shot import zero_shot_candidates
from pseudolabel.runner.manifest import read_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VOC = load_prompts("voc")
runner = CliRunner()


def test_corrected_probability_is_zero_strictly_above_the_threshold() -> None:
    p_in = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    p_ex = torch.tensor([[0.19, 0.2, 0.9], [0.0, 0.5, 0.2001]])
    expected = torch.tensor([[0.7, 0.2, 0.0], [0.3, 0.0, 0.0]])  # ELSE compares P_ex > 0.2
    torch.testing.assert_close(corrected_probabilities(p_in, p_ex, 0.2), expected)


def test_probabilities_follow_their_formulas() -> None:
    torch.manual_seed(0)
    regions, forward, reverse = (F.normalize(torch.randn(n, 8), dim=-1) for n in (2, 3, 3))
    inclusion = inclusion_probabilities(regions, forward)
    torch.testing.assert_close(inclusion, torch.softmax(100 * regions @ forward.T, dim=1))
    exclusion = clipn_exclusion_probabilities(regions, forward, reverse)
    yes, no = 100 * regions @ forward.T, 100 * regions @ reverse.T
    torch.testing.assert_close(exclusion, torch.exp(no) / (torch.exp(yes) + torch.exp(no)))
    vocabulary = F.normalize(torch.randn(20, 8), dim=-1)
    over_vocabulary = vocabulary_exclusion_probabilities(regions, vocabulary)
    logits = (100 * regions @ vocabulary.T).double()
    expected = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    torch.testing.assert_close(over_vocabulary.double(), expected / expected.sum(dim=1, keepdim=True))


def test_else_exclusion_takes_its_softmax_over_the_whole_class_vocabulary(monkeypatch) -> None:
    """With 2 candidates a softmax over them alone would give >= 0.5 somewhere; over VOC's 20
    classes, a region equally unlike every reverse prompt gets 1/20 < 0.2 and nothing is zeroed."""
    clip = tiny_clip()
    vectors = {f"{t.format(c.name)}": _unit(0) for c in VOC.classes for t in VOC.reverse_templates}
    vectors.update({f"{t.format(c.name)}": _unit(1) for c in VOC.classes for t in VOC.forward_templates})
    monkeypatch.setattr(clip, "encode_texts", FakeTexts(vectors))
    monkeypatch.setattr(clip, "encode_images", lambda images: F.normalize(torch.ones(len(images), 4), dim=-1))
    exclusion = ClassExclusion(clip, VOC, threshold=0.2)
    inclusion, p_ex, corrected = exclusion.probabilities(F.normalize(torch.ones(1, 4), dim=-1), [8, 12])
    torch.testing.assert_close(p_ex, torch.full((1, 2), 1 / 20))
    torch.testing.assert_close(corrected, inclusion)
    result = exclusion(np.zeros((4, 4, 3), np.uint8), torch.ones(2, 4, 4), [8, 12], [8, 12])
    assert result.rule == "else" and result.exclusions == []


class FakeTexts:
    """encode_texts stand-in: remembers every text and returns chosen unit vectors."""

    def __init__(self, vectors: dict[str, torch.Tensor], dimension: int = 4) -> None:
        self.vectors = vectors
        self.seen: list[str] = []
        self.dimension = dimension

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.seen += texts
        rows = [self.vectors.get(text, torch.full((self.dimension,), 0.5)) for text in texts]
        return F.normalize(torch.stack(rows), dim=-1)


def _unit(index: int, dimension: int = 4) -> torch.Tensor:
    return torch.eye(dimension)[index]


def test_reverse_prompts_come_from_the_prompt_file_and_impossible_classes_are_dropped(monkeypatch) -> None:
    clip = tiny_clip()
    texts = FakeTexts({
        "a photo of a cat.": _unit(0), "a photo of a dog.": _unit(1),
        "a photo without cat.": _unit(2), "a photo of no cat.": _unit(2),
        "a photo without dog.": _unit(3), "a photo of no dog.": _unit(3),
    })  # fmt: skip
    monkeypatch.setattr(clip, "encode_texts", texts)
    # the cat region looks like "no cat"; the dog region looks like a dog
    regions = F.normalize(torch.stack([_unit(2) + 0.1 * _unit(0), _unit(1)]), dim=-1)
    monkeypatch.setattr(clip, "encode_images", lambda images: regions[: len(images)])
    rgb = np.zeros((20, 30, 3), np.uint8)
    result = ClassExclusion(clip, VOC, threshold=0.2)(rgb, torch.ones(2, 20, 30), [8, 12], [8, 12])
    assert {"a photo without cat.", "a photo of no cat.", "a photo of a dog."} <= set(texts.seen)
    assert result.kept == [False, True]
    cat_cat = next(e for e in result.exclusions if e["region"] == "cat" and e["class"] == "cat")
    assert cat_cat["p_ex"] > 0.2 and 0 <= cat_cat["p_in"] <= 1
    assert all(e["p_ex"] > 0.2 for e in result.exclusions)


def test_a_region_better_explained_by_another_candidate_is_dropped(monkeypatch) -> None:
    """Several SAM masks may claim the same class; each is judged against all candidates."""
    clip = tiny_clip()
    texts = FakeTexts({"a photo of a cat.": _unit(0), "a photo of a dog.": _unit(1)})  # reverse prompts: far away
    monkeypatch.setattr(clip, "encode_texts", texts)
    regions = F.normalize(torch.stack([_unit(0), _unit(1), _unit(0) + 0.01 * _unit(1)]), dim=-1)
    monkeypatch.setattr(clip, "encode_images", lambda images: regions[: len(images)])
    names = ["mask 0 (cat)", "mask 1 (cat)", "mask 2 (dog)"]
    rgb = np.zeros((20, 30, 3), np.uint8)
    result = ClassExclusion(clip, VOC, 0.2)(rgb, torch.ones(3, 20, 30), [8, 8, 12], [8, 12], names, crop=True)
    assert result.kept == [True, False, False]  # mask 1 looks like a dog, mask 2 like a cat


def test_clipn_no_tower_replaces_reverse_prompts(monkeypatch) -> None:
    clip = tiny_clip()
    texts = FakeTexts({"a photo of a cat.": _unit(0), "a photo of a dog.": _unit(1)})
    monkeypatch.setattr(clip, "encode_texts", texts)
    seen: list[torch.Tensor] = []

    def no_tower(tokens: torch.Tensor) -> torch.Tensor:  # "no cat" -> unit 2, "no dog" -> unit 3
        seen.append(tokens)
        return torch.stack([_unit(2 + i % 2) for i in range(len(tokens))])

    regions = F.normalize(torch.stack([_unit(2) + 0.1 * _unit(0), _unit(1)]), dim=-1)
    monkeypatch.setattr(clip, "encode_images", lambda images: regions[: len(images)])
    exclusion = ClassExclusion(clip, VOC, 0.2, no_tower=no_tower)
    result = exclusion(np.zeros((20, 30, 3), np.uint8), torch.ones(2, 20, 30), [8, 12], [8, 12])
    assert result.kept == [False, True]
    assert seen and not any("without" in t for t in texts.seen)  # reverse prompts are not used
    expected = clip.tokenizer(["a photo of a cat.", "a photo of a dog."])
    assert torch.equal(seen[0], expected)  # the "no" tower reads the forward prompts


def test_region_crops_frame_the_mask(monkeypatch) -> None:
    clip = tiny_clip()
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[10:20, 40:50] = 200  # a bright square, the region
    region = torch.zeros(1, 60, 80)
    region[0, 10:20, 40:50] = 1
    whole = region_images(clip, rgb, region, crop=False)
    cropped = region_images(clip, rgb, region, crop=True)
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    bright = lambda x: ((x * std + mean) > 0.5).float().mean()  # noqa: E731
    assert bright(cropped) > 0.5 > bright(whole)  # the crop is mostly the object, the whole image is not


def test_zero_shot_candidates_take_top_k_above_the_minimum(monkeypatch) -> None:
    clip = tiny_clip()
    dimension = 24
    vectors = {f"a photo of a {entry.name}.": _unit(i % dimension, dimension) for i, entry in enumerate(VOC.classes)}
    monkeypatch.setattr(clip, "encode_texts", FakeTexts(vectors, dimension))
    image = F.normalize(_unit(8, dimension) + 0.97 * _unit(15, dimension), dim=-1)  # cat, then person
    chosen = zero_shot_candidates(clip, image, VOC, top_k=3, min_probability=0.05)
    assert [c for c, _ in chosen] == [8, 15]
    assert chosen[0][1] > chosen[1][1] > 0.05
    only_best = zero_shot_candidates(clip, image, VOC, top_k=3, min_probability=0.99)
    assert [c for c, _ in only_best] == [8]


def test_unlabelled_datasets(tmp_path: Path) -> None:
    hidden = build_dataset("voc", EXAMPLES / "voc" / "VOC2012", "train", labels_file=Path("none"))
    assert hidden.ids() and all(hidden.classes(i) == () for i in hidden.ids())
    folder = FolderDataset(EXAMPLES / "voc" / "VOC2012" / "JPEGImages", None)
    assert folder.ids() == hidden.ids()
    (tmp_path / "a.jpg").write_bytes((EXAMPLES / "voc" / "VOC2012" / "JPEGImages" / "2026_000001.jpg").read_bytes())
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match="share the id 'a'"):
        FolderDataset(tmp_path, None)


@pytest.mark.parametrize("dataset", ["voc", "folder"])
def test_generate_zero_shot_with_exclusion(tmp_path: Path, dataset: str) -> None:
    root = EXAMPLES / "voc" / "VOC2012" / ("JPEGImages" if dataset == "folder" else "")
    args = ["generate", "--dataset", dataset, "--root", str(root), "--labels", "none", "--exclude"]
    args += [
        "--out",
        str(tmp_path / "out"),
        "--clip-model",
        str(write_tiny_config(tmp_path)),
        "--clip-weights",
        "random",
    ]
    result = runner.invoke(app, [*args, "--device", "cpu", "--num-workers", "0", "--exclusion-threshold", "0.0"])
    assert result.exit_code == 0, result.output
    assert "4 images labelled" in result.output and "exclusion:" in result.output
    records = read_manifest(tmp_path / "out" / "manifest.jsonl")
    for record in records:
        assert record["candidates"] and set(record["classes"]) <= set(record["candidates"])
        assert record["exclusion_rule"] == "else"
        assert all(e["p_ex"] > 0.0 for e in record["exclusions"])  # threshold 0: every pair is recorded
        assert len(record["exclusions"]) == len(record["candidates"]) ** 2
        assert record["classes"] == []  # P_ex > 0 zeroes everything: no class survives
    from pseudolabel.core.masks import read_mask

    assert set(np.unique(read_mask(tmp_path / "out" / "2026_000001.png"))) <= {0, 255}


def test_regions_are_encoded_in_batches_with_the_same_result(monkeypatch) -> None:
    """A detector's hundreds of regions go to CLIP REGION_BATCH at a time; the verdicts do not change."""
    import pseudolabel.labelers.exclusion as exclusion_module

    clip = tiny_clip()
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    regions = (torch.rand(5, 20, 30, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    classes = [8, 12, 8, 12, 8]
    whole = ClassExclusion(clip, VOC, threshold=0.0)(rgb, regions, classes, [8, 12], crop=True)
    batch_sizes = []
    encode = clip.encode_images
    monkeypatch.setattr(clip, "encode_images", lambda images: batch_sizes.append(len(images)) or encode(images))
    monkeypatch.setattr(exclusion_module, "REGION_BATCH", 2)
    batched = ClassExclusion(clip, VOC, threshold=0.0)(rgb, regions, classes, [8, 12], crop=True)
    assert batch_sizes == [2, 2, 1]
    assert batched.kept == whole.kept
    assert [e["region"] for e in batched.exclusions] == [e["region"] for e in whole.exclusions]
    for got, expected in zip(batched.exclusions, whole.exclusions, strict=True):
        assert got["p_ex"] == pytest.approx(expected["p_ex"], abs=2e-4)

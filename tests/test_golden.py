"""Golden outputs: every labeler, refiner and their main options on the four example images with
tiny seeded random models, compared with the outputs recorded in ``fixtures/golden/``.

Each run's record holds its label maps (``<run>.npz``: ``label/<id>`` uint8 [H, W] and, where the
run saves soft scores, ``scores/<id>`` float16 [K+1, H/8, W/8], every 8th pixel of each axis, with
``classes/<id>``) and its manifest records without timings (``records.json``). Float work rounds
differently on another CPU or thread count, so the comparison allows what was measured there:
across AVX-512, AVX2 and no vectorisation (``ATEN_CPU_CAPABILITY``) and 1 or 2 threads, the most
one image moved was 14 of 168,500 pixels (8e-5), a saved score 4.9e-4 (one float16 step) and an
image's scores 1.4e-5 on average; the bounds below are 12, 8 and 7 times that. Records (chosen
names, excluded classes, detection counts) must be equal, recorded scores (SAM 3's presence)
within 1e-3. Byte-for-byte equality is tested where both sides run in one test on one machine
with one thread count (batches and Ray here, resume and shards in test_determinism.py).

After a deliberate change of outputs, re-record with ``PSEUDOLABEL_RECORD_GOLDEN=1 pytest
tests/test_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import stand_in_checkpoint, torch_threads
from tiny_clip import TINY_CLIP, write_tiny_config
from tiny_detectors import write_tiny_owl_config
from tiny_grounding import write_tiny_grounding_config
from tiny_sam import build_tiny_sam, tiny_hq_sam, tiny_sam2
from tiny_sam3 import tiny_sam3, write_tiny_sam3_config
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.masks import read_mask
from pseudolabel.core.scoremaps import load_scores
from pseudolabel.models import clipn
from pseudolabel.models.image_encodings import CachedImageEncoder
from pseudolabel.runner.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_VOC = ROOT / "examples" / "voc" / "VOC2012"
COARSE_MASKS = ROOT / "examples" / "voc" / "coarse_masks"
GOLDEN = Path(__file__).parent / "fixtures" / "golden"
RECORD = os.environ.get("PSEUDOLABEL_RECORD_GOLDEN") == "1"
runner = CliRunner()

CAM = ["generate", "--method", "cam"]
GROUNDED = ["generate", "--method", "grounded-sam", "--box-threshold", "0.45"]
SAM3 = ["generate", "--method", "sam3"]
RUNS: dict[str, list[str]] = {
    "cam": [*CAM, "--save-scores", "{out}/scores"],
    "cam-pole-multiscale": [*CAM, "--synonyms", "pole", "--scales", "1.0,0.75", "--flip"],
    "cam-plain-names-bg-threshold": [*CAM, "--synonyms", "none", "--no-caa", "--bg-threshold", "0.3"],
    "cam-exclude-clip": [*CAM, "--exclude", "--exclusion-threshold", "0.05"],
    "cam-exclude-clipn": [*CAM, "--exclude", "--exclusion-weights", "clipn_vit_b16"],
    "cam-zero-shot": [*CAM, "--labels", "none", "--zero-shot-top-k", "2", "--zero-shot-min-probability", "0"],
    "cam-crf": [*CAM, "--refine", "crf", "--min-confidence", "0.6", "--unsure-margin", "0"],
    "cam-sam-points": [*CAM, "--refine", "sam", "--grid", "8", "--iou-threshold", "0.1"],
    "cam-sam-auto": [*CAM, "--refine", "sam", "--sam-mode", "auto"],
    "grounded-joint": [*GROUNDED, "--save-scores", "{out}/scores"],
    "grounded-per-class-detector": [*GROUNDED, "--captions", "per-class", "--synonyms", "detector",
                                    "--nms-threshold", "1"],
    "grounded-pole-exclude": [*GROUNDED, "--synonyms", "pole", "--exclude"],
    "grounded-zero-shot": [*GROUNDED, "--labels", "none", "--zero-shot-min-probability", "0"],
    "grounded-joint-hq-token-only": [*GROUNDED, "--sam", "hq_vit_b", "--hq-token-only"],
    "grounded-joint-sam2": [*GROUNDED, "--sam", "sam2.1_hiera_t", "--save-scores", "{out}/scores"],
    "sam3": [*SAM3, "--save-scores", "{out}/scores"],
    "sam3-presence-zero-shot-pole": [*SAM3, "--labels", "none", "--zero-shot-from", "presence", "--synonyms", "pole"],
    "refine-crf-mask": ["refine", "--refine", "crf", "--masks", str(COARSE_MASKS), "--min-confidence", "0.5"],
    "refine-sam-points-mask": ["refine", "--refine", "sam", "--masks", str(COARSE_MASKS), "--iou-threshold", "0.1"],
    "refine-sam-auto-mask": ["refine", "--refine", "sam", "--sam-mode", "auto", "--masks", str(COARSE_MASKS)],
    "refine-hq-sam-points-mask": ["refine", "--refine", "sam", "--sam", "hq_vit_l", "--masks", str(COARSE_MASKS),
                                  "--iou-threshold", "0.1"],
    "refine-hq-sam-auto-mask": ["refine", "--refine", "sam", "--sam", "hq_vit_h", "--sam-mode", "auto",
                                "--masks", str(COARSE_MASKS)],
    "refine-sam2-points-mask": ["refine", "--refine", "sam", "--sam", "sam2.1_hiera_l", "--masks", str(COARSE_MASKS),
                                "--iou-threshold", "0.1"],
}  # fmt: skip
NEEDS_SAM2 = {name for name, args in RUNS.items() if any(arg.startswith("sam2") for arg in args)}
"""Runs of SAM 2.1 (Meta's ``sam2`` package is an optional extra: they skip without it)."""
STAND_INS = {
    "generate": ["--clip-weights", "random", "--detector-weights", "random", "--sam3-checkpoint", "random"],
    "refine": [],
}


LABEL_MISMATCH = 1e-3  # share of an image's pixels allowed to differ from the record
SCORE_MAX_DIFF = 4e-3  # largest |difference| of a saved score
SCORE_MEAN_DIFF = 1e-4  # mean |difference| of an image's saved scores
SCORE_STRIDE = 8  # the record keeps every 8th row and column of the saved scores


@dataclass
class RunOutputs:
    """What one golden run wrote: label maps, saved scores (subsampled) and records without timings."""

    labels: dict[str, np.ndarray]
    scores: dict[str, tuple[list[int], np.ndarray]]
    records: list[dict]

    @classmethod
    def read(cls, out: Path) -> RunOutputs:
        labels = {png.stem: read_mask(png) for png in sorted(out.glob("*.png"))}
        scores = {}
        for npz in sorted((out / "scores").glob("*.npz")):
            maps = load_scores(npz)
            scores[npz.stem] = (list(maps.class_ids), maps.scores[:, ::SCORE_STRIDE, ::SCORE_STRIDE].astype(np.float16))
        records = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in read_manifest(out / "manifest.jsonl")]
        return cls(labels, scores, sorted(records, key=lambda r: r["id"]))

    @classmethod
    def load(cls, name: str) -> RunOutputs:
        path = GOLDEN / f"{name}.npz"
        assert path.is_file(), f"no golden record for {name}: record with PSEUDOLABEL_RECORD_GOLDEN=1"
        with np.load(path) as arrays:
            ids = {key.split("/", 1)[1] for key in arrays.files}
            labels = {image_id: arrays[f"label/{image_id}"] for image_id in ids}
            scored = [image_id for image_id in ids if f"scores/{image_id}" in arrays.files]
            scores = {i: (arrays[f"classes/{i}"].tolist(), arrays[f"scores/{i}"]) for i in scored}
        return cls(labels, scores, json.loads((GOLDEN / "records.json").read_text())[name])

    def save(self, name: str) -> None:
        GOLDEN.mkdir(exist_ok=True)
        arrays = {f"label/{image_id}": label for image_id, label in self.labels.items()}
        for image_id, (class_ids, scores) in self.scores.items():
            arrays[f"scores/{image_id}"], arrays[f"classes/{image_id}"] = scores, np.array(class_ids)
        np.savez_compressed(GOLDEN / f"{name}.npz", **arrays)
        path = GOLDEN / "records.json"
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**recorded, name: self.records}, indent=1, sort_keys=True) + "\n")

    def differences(self, golden: RunOutputs) -> list[str]:
        """How far these outputs are from the golden ones, one line per bound broken (empty: within)."""
        if sorted(self.labels) != sorted(golden.labels) or sorted(self.scores) != sorted(golden.scores):
            return [f"wrote {sorted(self.labels)} (scores {sorted(self.scores)}), the record has "
                    f"{sorted(golden.labels)} (scores {sorted(golden.scores)})"]  # fmt: skip
        found = []
        for image_id, label in self.labels.items():
            want = golden.labels[image_id]
            if label.shape != want.shape:
                found.append(f"{image_id}: mask {label.shape}, recorded {want.shape}")
                continue
            share = float(np.mean(label != want))
            if share > LABEL_MISMATCH:
                found.append(f"{image_id}: {int(np.sum(label != want))} of {label.size} pixels differ "
                             f"({share:.3%}; allowed {LABEL_MISMATCH:.1%})")  # fmt: skip
        for image_id, (class_ids, scores) in self.scores.items():
            want_ids, want = golden.scores[image_id]
            if class_ids != want_ids or scores.shape != want.shape:
                found.append(f"{image_id}: scores of {class_ids} {scores.shape}, recorded {want_ids} {want.shape}")
                continue
            error = np.abs(scores.astype(np.float32) - want.astype(np.float32))
            if error.max() > SCORE_MAX_DIFF or error.mean() > SCORE_MEAN_DIFF:
                found.append(f"{image_id}: scores differ by up to {error.max():.2g}, mean {error.mean():.2g} "
                             f"(allowed {SCORE_MAX_DIFF:g}, mean {SCORE_MEAN_DIFF:g})")  # fmt: skip
        for record, want in zip(self.records, golden.records, strict=False):
            if not _same(record, want):
                found.append(f"manifest record {record} differs from the recorded {want}")
        if len(self.records) != len(golden.records):
            found.append(f"{len(self.records)} manifest records, recorded {len(golden.records)}")
        return found


def _same(value: object, recorded: object) -> bool:
    """Equal records, numbers within 1e-3 (scores such as SAM 3's presence are recorded rounded)."""
    if isinstance(value, dict) and isinstance(recorded, dict):
        return value.keys() == recorded.keys() and all(_same(value[k], recorded[k]) for k in value)
    if isinstance(value, list) and isinstance(recorded, list):
        return len(value) == len(recorded) and all(_same(a, b) for a, b in zip(value, recorded, strict=True))
    if isinstance(value, float) and isinstance(recorded, float):
        return abs(value - recorded) <= 1e-3
    return value == recorded


def _run(name: str, tmp_path: Path, *extra: str) -> Path:
    """Run ``RUNS[name]`` with tiny models on the example data; ``extra`` flags come last, so they
    override the run's own and the stand-ins (the last of a repeated flag wins)."""
    tmp_path.mkdir(exist_ok=True)
    out = tmp_path / name
    args = [part.replace("{out}", str(out)) for part in RUNS[name]]
    command = args[0]
    tiny = [
        "--clip-model",
        str(write_tiny_config(tmp_path)),
        "--detector",
        str(write_tiny_grounding_config(tmp_path)),
        "--sam3-model",
        str(write_tiny_sam3_config(tmp_path)),
    ]
    args += [*STAND_INS[command], *(tiny if command == "generate" else []), "--sam-checkpoint", "random"]
    args += ["--dataset", "voc", "--root", str(EXAMPLE_VOC), "--out", str(out), "--device", "cpu", "--num-workers", "0"]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 0, f"{name}: {result.output}"
    assert {r["status"] for r in read_manifest(out / "manifest.jsonl")} == {"ok"}
    return out


def _files(out: Path) -> dict[str, bytes]:
    """The bytes of every PNG and saved-scores file of a run."""
    paths = sorted([*out.glob("*.png"), *out.glob("scores/*.npz")])
    return {str(path.relative_to(out)): path.read_bytes() for path in paths}


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny seeded random models in place of every real one (SAM 2.1 where ``sam2`` is installed)."""
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
    monkeypatch.setattr("pseudolabel.models.hq_sam.build_hq_sam", lambda variant, checkpoint, device: tiny_hq_sam())
    monkeypatch.setattr("pseudolabel.models.sam3.build_sam3", lambda model, checkpoint, device: tiny_sam3())
    if importlib.util.find_spec("sam2") is not None:
        sam2_model = tiny_sam2()
        monkeypatch.setattr("pseudolabel.models.sam2_image.build_sam2_model", lambda *args: sam2_model)
    real_load_clipn = clipn.load_clipn
    monkeypatch.setattr(clipn, "load_clipn", lambda weights, device: real_load_clipn("random", device, TINY_CLIP))
    stand_in_checkpoint("clipn_vit_b16")


@pytest.mark.parametrize("name", list(RUNS))
def test_outputs_match_the_recorded_golden_outputs(name: str, tmp_path: Path, tiny_models: None) -> None:
    if name in NEEDS_SAM2:
        pytest.importorskip("sam2", reason="Meta's sam2 package is an optional extra")
    outputs = RunOutputs.read(_run(name, tmp_path))
    if RECORD:
        outputs.save(name)
        return
    differences = outputs.differences(RunOutputs.load(name))
    assert not differences, f"{name}: outputs differ from the golden run:\n" + "\n".join(differences)


def test_the_comparison_reports_how_far_off_a_run_is(tmp_path: Path) -> None:
    """One pixel in a thousand may move; one more, or a score moved past its bound, is reported."""
    golden = RunOutputs.load("cam")
    labels = {image_id: label.copy() for image_id, label in golden.labels.items()}
    moved = labels["2026_000001"].reshape(-1)
    allowed = int(LABEL_MISMATCH * moved.size)
    moved[:allowed] = 254
    scores = {image_id: (ids, maps.copy()) for image_id, (ids, maps) in golden.scores.items()}
    assert RunOutputs(labels, scores, golden.records).differences(golden) == []
    moved[allowed] = 254
    scores["2026_000002"][1][0, 0, 0] += 0.5
    records = [{**golden.records[0], "classes": ["dog"]}, *golden.records[1:]]
    found = RunOutputs(labels, scores, records).differences(golden)
    assert found[0] == f"2026_000001: {allowed + 1} of {moved.size} pixels differ (0.101%; allowed 0.1%)"
    assert found[1].startswith("2026_000002: scores differ by up to 0.5, mean")
    assert found[2].startswith("manifest record") and "'dog'" in found[2]


@pytest.mark.parametrize(
    ("name", "encoders"),
    [("grounded-joint", {"GroundingDino", "SamPrompter"}), ("cam-sam-points", {"ClipEsCam", "SamPrompter"}),
     ("cam-pole-multiscale", {"ClipEsCam"}), ("refine-sam-points-mask", {"SamPrompter"}),
     ("refine-sam-auto-mask", {"SamPrompter"}), ("grounded-joint-hq-token-only", {"GroundingDino", "HqSamPrompter"}),
     ("refine-sam2-points-mask", {"Sam2Prompter"})],
)  # fmt: skip
def test_runs_in_batches_write_the_outputs_of_batch_size_1(
    name: str, encoders: set[str], tmp_path: Path, tiny_models: None
) -> None:
    """SAM's image encoder (every family's), CLIP-ES's views and Grounding DINO's backbone take the 4
    example images 2 at a time: masks, scores and records are the batch-size-1 ones within the
    golden tolerance (the example images differ in size, so CLIP-ES and Grounding DINO batch no two
    of them, as at batch size 1: test_batching.py checks images of equal size). Not byte for byte:
    a batch of 2 changes the GEMM library's blocking, so the tiny SAM encoder's embedding moves by
    up to 2e-6 on a Sapphire Rapids Xeon (bit-equal on an EPYC), which moved a mask edge once."""
    if name in NEEDS_SAM2:
        pytest.importorskip("sam2", reason="Meta's sam2 package is an optional extra")
    encoded: list[tuple[str, int]] = []
    real_embed = CachedImageEncoder.embed_batch

    def embed_batch(self, images):
        encoded.append((type(self).__name__, len(images)))
        return real_embed(self, images)

    one = _run(name, tmp_path / "one")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CachedImageEncoder, "embed_batch", embed_batch)
        two = _run(name, tmp_path / "two", "--batch-size", "2")
    assert sorted(encoded) == sorted((encoder, 2) for encoder in encoders for _ in range(2))
    assert sorted(_files(two)) == sorted(_files(one))
    differences = RunOutputs.read(two).differences(RunOutputs.read(one))
    assert not differences, f"{name} at batch size 2 against batch size 1:\n" + "\n".join(differences)


@pytest.mark.parametrize(
    ("name", "detector"),
    [("cam-pole-multiscale", None), ("cam-crf", None), ("sam3", None), ("grounded-joint", write_tiny_owl_config)],
)
def test_the_ray_engine_writes_the_bytes_of_a_local_run(
    name: str, detector: Callable[[Path], Path] | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example data labelled by one Ray actor (a local Ray instance) gives the bytes of this
    process's run with as many torch threads as the actor has: float sums run in an order that
    depends on the thread count (2 actors of 1 core moved 1 pixel in 135,300 of one multiscale
    POLE mask against a 2-thread run), so both sides use 1 thread here. Grounded-SAM runs with OWLv2
    as its detector (random weights in both processes) and the tiny SAM on both sides: it reaches
    the actor through Ray's worker setup hook (the engine joins the Ray instance started here), and
    SAM ViT-B's random masks there would not equal the local run's."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # Ray's workers keep a thread count they inherit
    flags = []
    if detector is not None:
        flags = ["--detector", str(detector(tmp_path)), "--box-threshold", "0.6"]
        monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
        tests = str(Path(__file__).parent)
        path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
        setup = {"env_vars": {"PYTHONPATH": path}, "worker_process_setup_hook": "tiny_sam.use_tiny_sam_in_this_process"}
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env=setup)
    try:
        with torch_threads(1):
            local = _run(name, tmp_path / "local", *flags)
        on_ray = _run(name, tmp_path / "ray", *flags, "--engine", "ray", "--ray-workers", "1")
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert _files(on_ray) == _files(local)
    assert RunOutputs.read(on_ray).records == RunOutputs.read(local).records


def test_compiled_sam_encoder_gives_the_golden_outputs(tmp_path: Path, tiny_models: None) -> None:
    """``--compile``: SAM's image encoder runs through torch.compile (the module compiled is the
    encoder) and the outputs stay within the golden bounds of the eager run."""
    compiled: list[str] = []
    real_compile = torch.nn.Module.compile

    def compile_module(self, *args, **kwargs):
        compiled.append(type(self).__name__)
        return real_compile(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Module, "compile", compile_module)
        out = _run("refine-sam-points-mask", tmp_path, "--compile")
    assert compiled == ["ImageEncoderViT"]
    assert RunOutputs.read(out).differences(RunOutputs.load("refine-sam-points-mask")) == []

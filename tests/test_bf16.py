"""bf16 on the CPU: ``--precision auto`` follows the CPU (bf16 where it is native), the run records
what it became and a resume elsewhere cannot mix the two, and every model path runs under bf16
autocast on the example data with outputs close to fp32's. PyTorch emulates bf16 (slowly) on a CPU
without native support, so these run on any CPU; speed is measured in benchmarks/, not here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_clip import write_tiny_config
from tiny_grounding import write_tiny_grounding_config
from tiny_sam import build_tiny_sam, tiny_hq_sam
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core import devices
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.masks import read_mask
from pseudolabel.core.scoremaps import load_scores
from pseudolabel.runner.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_VOC = ROOT / "examples" / "voc" / "VOC2012"
COARSE_MASKS = ROOT / "examples" / "voc" / "coarse_masks"
runner = CliRunner()


CPU_FLAGS = [("fpu avx2 avx512f avx512_bf16 sse4_2", "bf16"), ("fpu amx_bf16 amx_tile", "bf16"),
             ("fpu avx2 avx512f avx512bw", "fp32")]  # fmt: skip
"""/proc/cpuinfo flags and what ``--precision auto`` becomes on the CPU with them."""


@pytest.mark.parametrize(("flags", "auto"), CPU_FLAGS)
def test_auto_precision_is_bf16_where_the_cpu_has_it(
    flags: str, auto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(devices, "CPUINFO", cpuinfo)
    monkeypatch.delenv("PSEUDOLABEL_CPU_BF16")
    cpu = torch.device("cpu")
    assert devices.resolve_precision("auto", cpu) == auto
    assert devices.resolve_precision("bf16", cpu) == "bf16" and devices.autocast_dtype("bf16", cpu) is torch.bfloat16
    assert devices.resolve_precision("fp32", cpu) == "fp32" and devices.autocast_dtype("fp32", cpu) is None
    monkeypatch.setenv("PSEUDOLABEL_CPU_BF16", "0")
    assert devices.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ConfigError, match="--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU"):
        devices.resolve_precision("fp16", cpu)


def _generate(tmp_path: Path, out: Path, *extra: str):
    args = ["generate", "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--out", str(out), "--device", "cpu"]
    args += ["--clip-model", str(write_tiny_config(tmp_path)), "--clip-weights", "random", "--num-workers", "0"]
    args += ["--detector", str(write_tiny_grounding_config(tmp_path)), "--detector-weights", "random"]
    args += ["--sam-checkpoint", "random"]
    return runner.invoke(app, [*args, *extra])


def test_the_run_records_what_auto_became_and_a_resume_cannot_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    first = _generate(tmp_path, out, "--method", "cam", "--limit", "2")
    assert first.exit_code == 0, first.output
    assert yaml.safe_load((out / "config.yaml").read_text())["generate"]["precision"] == "bf16"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)  # the same command on another CPU
    resumed = _generate(tmp_path, out, "--method", "cam")
    assert resumed.exit_code == 1
    assert "--precision" in resumed.output and "bf16" in resumed.output and "fp32" in resumed.output
    assert len(read_manifest(out / "manifest.jsonl")) == 2  # nothing was added


def _labels_and_scores(out: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    labels = {png.stem: read_mask(png) for png in sorted(out.glob("*.png"))}
    scores = {npz.stem: load_scores(npz).scores for npz in sorted((out / "scores").glob("*.npz"))}
    return labels, scores


def _agreement(fp32: dict[str, np.ndarray], bf16: dict[str, np.ndarray]) -> float:
    assert fp32.keys() == bf16.keys() and len(fp32) == 4
    return float(np.mean([np.mean(fp32[key] == bf16[key]) for key in fp32]))


@pytest.mark.parametrize(
    ("name", "extra", "least_agreement"),
    [
        ("cam", ["--method", "cam", "--scales", "1.0,0.75", "--flip"], 0.99),  # measured 99.55 %
        ("cam-pole-exclude-crf", ["--method", "cam", "--synonyms", "pole", "--exclude", "--refine", "crf"], 0.99),
        ("grounded-sam", ["--method", "grounded-sam", "--box-threshold", "0.45", "--sam", "hq_vit_b"], 0.97),
    ],
)  # fmt: skip
def test_generate_under_bf16_is_close_to_fp32(
    name: str, extra: list[str], least_agreement: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every model path of ``generate`` runs under bf16 autocast and hands numpy float32 (the
    first bf16 CAM run crashed in OpenCV); labels agree with fp32 on most pixels (tiny random
    models, whose maps are flatter than real ones: measured 99.55 % for CAM, 99.78 % with POLE,
    exclusion and CRF, 98.19 % for Grounded-SAM with HQ-SAM; mean score change 0.05 % to 1.4 %)."""
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
    monkeypatch.setattr("pseudolabel.models.hq_sam.build_hq_sam", lambda variant, checkpoint, device: tiny_hq_sam())
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        result = _generate(tmp_path, out, *extra, "--precision", precision, "--save-scores", str(out / "scores"))
        assert result.exit_code == 0, result.output
        assert {r["status"] for r in read_manifest(out / "manifest.jsonl")} == {"ok"}
        runs[precision] = _labels_and_scores(out)
    agreement = _agreement(runs["fp32"][0], runs["bf16"][0])
    assert agreement >= least_agreement
    moved = []
    for key, scores in runs["fp32"][1].items():
        bf16_scores = runs["bf16"][1][key]
        assert bf16_scores.dtype == np.float32
        moved.append(float(np.abs(bf16_scores - scores).mean()))
    assert max(moved) < 0.05 and max(moved) > 0  # close to fp32, and bf16 did run


@pytest.mark.parametrize("mode", ["points", "auto"])
def test_refine_with_sam_under_bf16(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pseudolabel.models.sam.build_sam", build_tiny_sam)
    labels = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["refine", "--dataset", "voc", "--root", str(EXAMPLE_VOC), "--masks", str(COARSE_MASKS), "--out"]
        args += [str(out), "--refine", "sam", "--sam-mode", mode, "--grid", "8", "--iou-threshold", "0.1"]
        result = runner.invoke(app, [*args, "--sam-checkpoint", "random", "--device", "cpu", "--precision", precision])
        assert result.exit_code == 0, result.output
        labels[precision] = {png.stem: read_mask(png) for png in out.glob("*.png")}
        assert {r["status"] for r in read_manifest(out / "manifest.jsonl")} == {"ok"}
        assert yaml.safe_load((out / "config.yaml").read_text())["refine"]["precision"] == precision
    assert _agreement(labels["fp32"], labels["bf16"]) >= 0.99  # measured 99.88 % (points); auto runs in fp32


def test_train_and_predict_under_bf16(tmp_path: Path) -> None:
    from train_helpers import synthetic_voc, train_seg_args

    voc, masks = synthetic_voc(tmp_path)
    run = tmp_path / "run"
    trained = runner.invoke(app, [*train_seg_args(voc, masks, run), "--iters", "2", "--precision", "bf16"])
    assert trained.exit_code == 0, trained.output
    losses = [r["loss"] for r in read_manifest(run / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert yaml.safe_load((run / "config.yaml").read_text())["train-seg"]["precision"] == "bf16"
    predict = ["predict", "--checkpoint", str(run / "last.pt"), "--dataset", "voc", "--root", str(voc)]
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        predicted = runner.invoke(app, [*predict, "--out", str(out), "--device", "cpu", "--precision", precision])
        assert predicted.exit_code == 0, predicted.output
        assert yaml.safe_load((out / "config.yaml").read_text())["predict"]["precision"] == precision
    labels = [{png.stem: read_mask(png) for png in (tmp_path / p).glob("*.png")} for p in ("fp32", "bf16")]
    assert _agreement(*labels) >= 0.99


def test_frozen_batch_norm_keeps_bf16_activations_bf16() -> None:
    """DeepLabV2's frozen batch norm: in float32 exactly torchvision's; a bf16 input stays bf16
    (torchvision's float32 scale would promote it) and is that result rounded to bf16."""
    from torchvision.ops.misc import FrozenBatchNorm2d as Reference

    from pseudolabel.models.frozen_norm import FrozenBatchNorm2d

    torch.manual_seed(0)
    ours, reference = FrozenBatchNorm2d(8), Reference(8)
    for name in ("weight", "bias", "running_mean"):
        getattr(ours, name).normal_()
    ours.running_var.uniform_(0.5, 2.0)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(ours(x), reference(x))
    low = ours(x.bfloat16())
    assert low.dtype == torch.bfloat16 and reference(x.bfloat16()).dtype == torch.float32
    torch.testing.assert_close(low.float(), reference(x.bfloat16()), atol=0.05, rtol=0.02)

"""Settings-aware resume: an output folder remembers the settings that made its outputs."""

from __future__ import annotations

from pathlib import Path

from helpers import generate_tiny, small_voc
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.runner.recorded_settings import RUN_ONLY_OPTIONS, SETTINGS_FILE, differences, output_settings

runner = CliRunner()


def test_resume_with_other_output_settings_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    voc, out = small_voc(tmp_path, 4), tmp_path / "out"
    assert generate_tiny(voc, out, "--limit", "2").exit_code == 0
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    refused = generate_tiny(voc, out, "--bg-alpha", "3", "--scales", "1.0,0.5")
    assert refused.exit_code == 1
    message = refused.output.strip()
    assert "\n" not in message, message
    assert "--bg-alpha was 1.0, now 3.0" in message
    assert "--scales was '1.0', now '1.0,0.5'" in message
    assert "--overwrite" in message
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before


def test_run_only_options_may_change_and_overwrite_records_the_new_settings(tmp_path: Path) -> None:
    voc, out = small_voc(tmp_path, 4), tmp_path / "out"
    assert generate_tiny(voc, out, "--limit", "2").exit_code == 0
    resumed = generate_tiny(voc, out, "--num-workers", "1", "--shard", "0/1", "--device", "cpu")
    assert resumed.exit_code == 0, resumed.output
    assert "2 images labelled, 0 failed, 2 already done" in resumed.output
    redone = generate_tiny(voc, out, "--bg-alpha", "3", "--overwrite")
    assert redone.exit_code == 0, redone.output
    assert "4 images labelled" in redone.output
    assert "bg-alpha: 3.0" in (out / "config.yaml").read_text()
    assert generate_tiny(voc, out, "--bg-alpha", "3").exit_code == 0


def test_a_folder_of_another_command_is_refused(tmp_path: Path) -> None:
    voc, out = small_voc(tmp_path, 4), tmp_path / "out"
    assert generate_tiny(voc, out, "--limit", "1").exit_code == 0
    args = ["refine", "--dataset", "voc", "--root", str(voc), "--masks", str(out), "--out", str(out)]
    refused = runner.invoke(app, [*args, "--refine", "crf", "--num-workers", "0"])
    assert refused.exit_code == 1
    assert "holds the outputs of 'generate', not 'refine'" in refused.output


def test_a_first_run_that_wrote_no_image_may_be_rerun_with_new_settings(tmp_path: Path) -> None:
    voc, out = small_voc(tmp_path, 4), tmp_path / "out"
    missing = generate_tiny(voc, out, "--clip-weights", str(tmp_path / "missing.pt"))
    assert missing.exit_code == 1 and not out.exists()  # checkpoints are checked before anything is written
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")  # there, so the run starts, but does not load
    failed = generate_tiny(voc, out, "--clip-weights", str(tmp_path / "corrupt.pt"))
    assert failed.exit_code == 1 and (out / SETTINGS_FILE).is_file(), failed.output
    assert generate_tiny(voc, out).exit_code == 0


def test_paths_compare_resolved_and_unknown_options_are_not_compared(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = output_settings("generate", {"root": Path("voc"), "bg_alpha": 1.0, "num_workers": 4})
    absolute = output_settings("generate", {"root": tmp_path / "voc", "bg_alpha": 1.0, "device": "cuda"})
    assert differences(relative, absolute) == []
    assert "num_workers" in RUN_ONLY_OPTIONS and "num_workers" not in relative["options"]
    newer = output_settings("generate", {"root": tmp_path / "voc", "bg_alpha": 2.0, "max_side": 1024})
    assert differences(relative, newer) == [("bg_alpha", 1.0, 2.0)]

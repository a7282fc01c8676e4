"""The settings an output folder was made with, so that a resume cannot mix masks of two settings.

A run command records the option values that change its outputs in
``OUT/.pseudolabel-settings.json``. Resuming into that folder with other values is refused,
naming each differing flag, unless ``--overwrite`` redoes the images; options that only decide
how or which images run (workers, device, engine, batch size, compiling, shard, limit), or which
extra files are kept, do not count (another device or a compiled encoder rounds floats
differently, as another CPU does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.files import atomic_write_text, output_errors
from pseudolabel.core.plain import plain

SETTINGS_FILE = ".pseudolabel-settings.json"

RUN_ONLY_OPTIONS = frozenset(
    {
        "out",
        "config",
        "overwrite",
        "limit",
        "shard",
        "num_workers",
        "device",
        "report",
        "engine",
        "ray_address",
        "workers",
        "ray_workers",
        "gpus_per_worker",
        "batch_size",
        "compile_sam",
        "max_image_pixels",
        "save_scores",
        "save_instances",
    }
)
"""Option names (parameter names) that never change an image's outputs, so they may differ on resume
(an image missing the scores or instances now asked for is redone)."""


class SettingsChangedError(ConfigError):
    """An output folder holds outputs made with other settings than this run's."""


def output_settings(command: str, params: dict[str, Any]) -> dict[str, Any]:
    """``{"command": ..., "options": {name: value}}`` of the options that change outputs."""
    options = {name: plain(value, True) for name, value in sorted(params.items()) if name not in RUN_ONLY_OPTIONS}
    return {"command": command, "options": options}


def _recorded(out_dir: Path) -> dict[str, Any] | None:
    """The settings recorded in ``out_dir`` (None: none, or an unreadable file)."""
    try:
        recorded = json.loads((out_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) and isinstance(recorded.get("options"), dict) else None


def holds_outputs(out_dir: Path) -> bool:
    """True when a run has recorded an image in ``out_dir`` (a non-empty manifest): a folder whose
    first run stopped before any image (a missing checkpoint, say) may be rerun with new settings."""
    return any(path.stat().st_size > 0 for path in out_dir.glob("manifest*.jsonl"))


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(option, recorded value, current value) for each option both runs know and set differently
    (an option only one of them knows, from another pseudolabel version, is not compared)."""
    old, new = recorded["options"], current["options"]
    return [(name, old[name], new[name]) for name in sorted(set(old) & set(new)) if old[name] != new[name]]


def check_and_record(out_dir: Path, current: dict[str, Any], overwrite: bool, flag_names: dict[str, str]) -> None:
    """Refuse to resume ``out_dir`` with other output settings than it holds, then record ``current``.

    Args:
        out_dir: the run's output folder (created when missing).
        current: :func:`output_settings` of this run.
        overwrite: the run redoes every image, so earlier settings do not matter.
        flag_names: parameter name -> its flag without dashes (``bg_alpha`` -> ``bg-alpha``), for messages.

    Raises:
        SettingsChangedError: one line naming each differing flag with both values.
    """
    recorded = _recorded(out_dir)
    if recorded is not None and not overwrite and holds_outputs(out_dir):
        if recorded.get("command") != current["command"]:
            raise SettingsChangedError(
                f"{out_dir} holds the outputs of '{recorded.get('command')}', not '{current['command']}': "
                "choose another --out (or --overwrite)"
            )
        changed = differences(recorded, current)
        if changed:
            flag = {name: flag_names.get(name, name.replace("_", "-")) for name, _, _ in changed}
            listed = "; ".join(f"--{flag[name]} was {old!r}, now {new!r}" for name, old, new in changed)
            raise SettingsChangedError(
                f"{out_dir} holds outputs made with other settings ({listed}): "
                "add --overwrite to redo them, or choose another --out"
            )
    with output_errors(out_dir / SETTINGS_FILE):
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / SETTINGS_FILE, json.dumps(current, indent=1, sort_keys=True) + "\n")

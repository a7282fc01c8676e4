"""``--config FILE``: YAML option values that command-line flags override.

A config file holds option names as keys (``num-classes`` or ``num_classes``), either at the
top level or in a section named after the command (``score:``, ``generate:``), so that one
file can serve several commands. Every command writes the values it finally used
(``resolved config``) next to its outputs.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import typer
import yaml

from pseudolabel import __version__
from pseudolabel.core.errors import ConfigError
from pseudolabel.core.files import atomic_write_text, read_user_text
from pseudolabel.core.plain import plain

METADATA_KEYS = ("command", "pseudolabel_version", "written_at")
"""Keys of a resolved config that are records, not options (so the file can be reused)."""


def load_config_file(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Click callback of ``--config``: read the YAML file into the command's defaults.

    Raises:
        ConfigError: missing or malformed file, or a key that is not an option of the command.
    """
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(read_user_text(path, "config file")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}".replace("\n", " ")) from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of option names to values")
    command = ctx.command.name or ""
    options = option_names(ctx)
    siblings = set(getattr(ctx.parent.command, "commands", {})) if ctx.parent else set()
    values: dict[str, Any] = {}
    for key, item in data.items():
        name = options.get(str(key).replace("-", "_"))
        if str(key) in METADATA_KEYS or (str(key) == command and isinstance(item, dict)):
            continue  # the command's own section (``refine:`` also names refine's --refine option)
        if name is not None:
            values[name] = item
        elif str(key) not in siblings or not isinstance(item, dict):
            raise ConfigError(
                f"config file {path}: {key!r} is not an option of '{command}' (options: "
                f"{', '.join(sorted({display_name(ctx, n) for n in options.values()}))})"
            )
    section = data.get(command)
    if isinstance(section, dict):
        for key, item in section.items():
            name = options.get(str(key).replace("-", "_"))
            if name is None:
                raise ConfigError(f"config file {path}: {command}.{key} is not an option of '{command}'")
            values[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return path


def option_names(ctx: typer.Context) -> dict[str, str]:
    """Config keys a command accepts (``json`` for ``--json``, and the parameter name) -> parameter name."""
    names = {}
    for param in ctx.command.params:
        if not param.name or param.name == "config":
            continue
        names[param.name] = param.name
        for flag in getattr(param, "opts", []):
            if flag.startswith("--"):
                names[flag[2:].replace("-", "_")] = param.name
    return names


def display_name(ctx: typer.Context, name: str) -> str:
    """The long flag of a parameter without dashes (``json`` for ``json_path``)."""
    for param in ctx.command.params:
        if param.name == name:
            flags = [flag for flag in getattr(param, "opts", []) if flag.startswith("--")]
            if flags:
                return flags[0][2:]
    return name.replace("_", "-")


def resolved_config(ctx: typer.Context) -> dict[str, Any]:
    """The options a command ran with, keyed by flag name, ready to be written as YAML."""
    command = ctx.command.name or ""
    return config_document(command, {display_name(ctx, n): v for n, v in ctx.params.items() if n != "config"})


def config_document(command: str, options: dict[str, Any]) -> dict[str, Any]:
    """``config.yaml``'s content: the records (command, version, time), then ``command``'s options."""
    return {
        "command": command,
        "pseudolabel_version": __version__,
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command: plain(options),
    }


def write_resolved_config(path: Path, ctx: typer.Context) -> None:
    """Write the resolved config; the file can be passed back with ``--config`` to rerun."""
    atomic_write_text(path, yaml.safe_dump(resolved_config(ctx), sort_keys=False))


def write_config_document(path: Path, command: str, options: dict[str, Any]) -> None:
    """Write :func:`config_document` of ``command`` and its options (the Python API's runs)."""
    atomic_write_text(path, yaml.safe_dump(config_document(command, options), sort_keys=False))


def write_run_config(out_dir: Path, ctx: typer.Context, overwrite: bool) -> None:
    """For a run into ``out_dir``: refuse a resume with other output settings (see
    :mod:`pseudolabel.runner.recorded_settings`), record them, and write ``config.yaml``."""
    from pseudolabel.runner.recorded_settings import check_and_record, output_settings

    flag_names = {name: display_name(ctx, name) for name in ctx.params}
    check_and_record(out_dir, output_settings(ctx.command.name or "", dict(ctx.params)), overwrite, flag_names)
    write_resolved_config(out_dir / "config.yaml", ctx)

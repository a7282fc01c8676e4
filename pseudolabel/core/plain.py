"""Option values as YAML and JSON write them, and as the library takes them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any


def plain(value: Any, absolute_paths: bool = False) -> Any:
    """A YAML-friendly copy of an option value (paths and enums as strings, tuples as lists);
    ``absolute_paths``: paths expanded and resolved, so that two spellings of one file compare equal."""
    if isinstance(value, Path):
        return str(value.expanduser().resolve() if absolute_paths else value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(item, absolute_paths) for item in value]
    if isinstance(value, dict):
        return {str(k): plain(v, absolute_paths) for k, v in value.items()}
    return value


def choice_value(choice: Any) -> Any:
    """An enum choice's value (a flag's ``--x <a|b>`` choice); anything else as it is."""
    return getattr(choice, "value", choice)

"""Lists of image ids, one per line: what ``report`` says to review first and ``export --ids``
and ``report --ids`` take."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.files import atomic_write_text


def read_id_list(path: Path) -> list[str]:
    """The ids of ``path`` in file order (blank lines and ``#`` comments skipped, duplicates once)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the id list {path}: {error}") from error
    ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise ConfigError(f"the id list {path} names no image")
    return list(dict.fromkeys(ids))


def write_id_list(path: Path, ids: list[str], comment: str) -> None:
    """Write ``ids`` one per line after a ``# comment`` line, atomically."""
    atomic_write_text(path, f"# {comment}\n" + "".join(f"{image_id}\n" for image_id in ids))

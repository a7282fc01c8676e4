"""Atomic file output: a reader sees the old file or the complete new one, never a part.

A run killed halfway leaves at most a hidden temporary file (``.NAME.*.tmp``) that no
reader picks up and the next write replaces.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pseudolabel.core.errors import ConfigError, OutputError


def home_dir() -> Path:
    """The tool's own folder: ``$PSEUDOLABEL_HOME``, else the platform cache folder."""
    import platformdirs

    home = os.environ.get("PSEUDOLABEL_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("pseudolabel"))


def read_user_text(path: Path, what: str) -> str:
    """A text file a user wrote: UTF-8 (a BOM is dropped) or UTF-16 with its BOM.

    Raises:
        ConfigError: another encoding, naming the file.
    """
    data = path.read_bytes()
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8"
        ) from error


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()
"""Mode of new outputs: what ``open()`` would give (mkstemp alone would make them private)."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    Parent folders are created as needed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        os.chmod(temp, FILE_MODE)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


@contextlib.contextmanager
def output_errors(path: str | os.PathLike[str], kinds: tuple[type[Exception], ...] = (OSError,)) -> Iterator[None]:
    """Turn an error of ``kinds`` (OSError: disk full, I/O error, permission) while writing
    ``path`` into an :class:`~pseudolabel.core.errors.OutputError` naming the file and the cause."""
    try:
        yield
    except kinds as error:
        cause = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise OutputError(f"cannot write {path}: {cause}") from error


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Raises:
        OutputError: the write failed; ``path`` is as it was and no temporary file is left.
    """
    with output_errors(path), atomic_output(path) as temp:
        temp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))

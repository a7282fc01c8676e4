"""Paths built from untrusted names (image ids, labels-file entries, COCO ``file_name``) that
stay where they belong: ids map to files inside their folder, and images resolve (symlinks
followed) inside their dataset's image folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from pseudolabel.core.errors import UnsafePathError


def check_id(image_id: str) -> PurePosixPath:
    """``image_id`` as a relative POSIX path of plain names (sub-folders allowed).

    Raises:
        UnsafePathError: empty, absolute (POSIX or Windows), a drive, NUL or backslash, or a
            part that is empty, ``.`` or ``..``.
    """
    problem = None
    if not image_id or "\x00" in image_id or "\\" in image_id:
        problem = "is empty or holds NUL or a backslash"
    elif PurePosixPath(image_id).is_absolute() or PureWindowsPath(image_id).drive:
        problem = "is an absolute path"
    elif any(part in ("", ".", "..") for part in image_id.split("/")):
        problem = "has an empty, '.' or '..' part"
    if problem:
        raise UnsafePathError(f"image id {image_id!r} {problem}: it cannot name a file inside the output folder")
    return PurePosixPath(image_id)


def id_path(folder: Path, image_id: str, suffix: str) -> Path:
    """``folder/<image_id><suffix>``, always inside ``folder`` (see :func:`check_id`)."""
    relative = check_id(image_id)
    return folder.joinpath(*relative.parts[:-1], relative.parts[-1] + suffix)


def resolve_inside(boundary: Path, path: Path, what: str) -> Path:
    """``path`` with symlinks resolved, when that lies inside ``boundary`` (also resolved).

    Raises:
        UnsafePathError: it resolves elsewhere (``..`` parts, an absolute path, a symlink out).
    """
    try:
        resolved = Path(os.path.realpath(path))
    except ValueError as error:  # an embedded NUL
        raise UnsafePathError(f"{what} {str(path)!r} is not a file name: {error}") from error
    if not resolved.is_relative_to(Path(os.path.realpath(boundary))):
        raise UnsafePathError(f"{what} {path} resolves to {resolved}, outside {boundary}; it is not read")
    return resolved

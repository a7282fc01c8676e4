"""``manifest.jsonl``: one JSON record per processed image, appended as each image finishes.

A record is written with a single ``write`` and flushed, so a killed run loses at most the
line it was writing; opening the manifest again first cuts such a partial line off.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, TextIO

from pseudolabel.core.files import output_errors


def manifest_name(shard: tuple[int, int]) -> str:
    """``manifest.jsonl``, or ``manifest-shard<i>of<n>.jsonl`` so that shards never share a file."""
    index, count = shard
    return "manifest.jsonl" if count == 1 else f"manifest-shard{index}of{count}.jsonl"


class Manifest:
    """Append-only JSON-lines writer (use as a context manager)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None

    def __enter__(self) -> Manifest:
        with output_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            drop_partial_last_line(self.path)
            self._handle = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, error_type: object, *exc_info: object) -> None:
        if self._handle is None:
            return
        if error_type is None:
            with output_errors(self.path):
                self._handle.close()
        else:  # already failing (maybe this file's own write): closing must not hide that error
            with contextlib.suppress(OSError):
                self._handle.close()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a line."""
        assert self._handle is not None, "use Manifest as a context manager"
        with output_errors(self.path):
            self._handle.write(json.dumps(record, sort_keys=False) + "\n")
            self._handle.flush()


def drop_partial_last_line(path: Path) -> None:
    """Truncate ``path`` after its last newline (a line cut short by a killed process)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """All complete records of a manifest."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records

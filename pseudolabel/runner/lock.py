"""One run per output folder and shard: a lock file in the folder names the process holding it.

``OUT/.pseudolabel-lock-<i>of<n>.json`` holds pid, host, start time, shard and command. A second
run on the same folder and shard, or on a shard of another split (``i/n`` with a different
``n``, whose images overlap), stops with one line naming the holder. Shards ``i/n`` of one
split share a folder freely. A lock whose process is gone (same host) is taken over with a
notice; one from another host is never guessed stale.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pseudolabel.core.errors import RunLockedError
from pseudolabel.core.files import output_errors

LOCK_PREFIX = ".pseudolabel-lock-"


def lock_path(out_dir: Path, shard: tuple[int, int]) -> Path:
    """The lock file of one shard in ``out_dir``."""
    return out_dir / f"{LOCK_PREFIX}{shard[0]}of{shard[1]}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _holder(info: dict[str, Any] | None, path: Path) -> str:
    if info is None:
        return f"{path} (unreadable; delete it if no run is using the folder)"
    return (
        f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} "
        f"(shard {info.get('shard')}, {path.name})"
    )


def _is_stale(info: dict[str, Any] | None) -> bool:
    """Held by a process of this host that no longer exists."""
    return info is not None and info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", 0)))


class RunLock:
    """Context manager holding the lock of ``shard`` in ``out_dir`` (see the module docstring).

    Raises:
        RunLockedError: a live run holds this shard, or an overlapping one.
    """

    def __init__(self, out_dir: Path, shard: tuple[int, int], notice: Callable[[str], None] | None = None) -> None:
        self.out_dir = out_dir
        self.shard = shard
        self.path = lock_path(out_dir, shard)
        self.notice = notice or (lambda message: print(message, file=sys.stderr))

    def __enter__(self) -> RunLock:
        with output_errors(self.path):
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_overlapping_shards()
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "command": " ".join(sys.argv),
        }
        if not self._create(info):
            held = _read(self.path)
            if not _is_stale(held):
                raise RunLockedError(
                    f"{self.out_dir} is in use by {_holder(held, self.path)}; wait or use another --out"
                )
            self.notice(f"note: taking over the lock of {_holder(held, self.path)}: that process is gone")
            self.path.unlink(missing_ok=True)
            if not self._create(info):
                raise RunLockedError(f"{self.out_dir} is in use by {_holder(_read(self.path), self.path)}")
        return self

    def _create(self, info: dict[str, Any]) -> bool:
        """Write the lock file if it does not exist (atomically, O_EXCL); False if it does."""
        with output_errors(self.path):
            try:
                handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(info, file)
        return True

    def _check_overlapping_shards(self) -> None:
        """Live locks of shards with another count overlap this run's images."""
        for other in self.out_dir.glob(f"{LOCK_PREFIX}*.json"):
            if other == self.path or other.stem.endswith(f"of{self.shard[1]}"):
                continue
            held = _read(other)
            if not _is_stale(held):
                raise RunLockedError(
                    f"{self.out_dir} is in use by {_holder(held, other)}, whose images overlap shard "
                    f"{self.shard[0]}/{self.shard[1]}; wait or use another --out"
                )

    def __exit__(self, *exc_info: object) -> None:
        self.path.unlink(missing_ok=True)

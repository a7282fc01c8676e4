"""What the stages of one image report: manifest fields (stage seconds, choices) and tallies the
run summary adds up, so the runner needs to know no method."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StageRecord(dict[str, Any]):
    """Manifest fields of one image, plus ``tallies[title][key]`` counts for the run summary and
    ``extras``: outputs a stage hands the run that are not manifest fields (``instances``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tallies: dict[str, Counter[str]] = {}
        self.extras: dict[str, Any] = {}

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the seconds the block takes to field ``key`` (rounded to 0.1 ms)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self[key] = round(self.get(key, 0) + time.perf_counter() - start, 4)

    def tally(self, title: str, key: str, count: int = 1) -> None:
        """Count ``key`` under the summary heading ``title``."""
        self.tallies.setdefault(title, Counter())[key] += count

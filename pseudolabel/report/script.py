"""The report page's inline style (``page.css``) and script (``page.js``): no libraries, no network.

The per-image table sorts by any column (click a heading; ``#sort=miou`` sorts by the first
prediction's mIoU, worst first), filters by GT class and pages 100 rows at a time. With ``#check``
every thumbnail is loaded at once and ``#status`` records how many loaded and failed (tests)."""

from __future__ import annotations

from importlib import resources

PAGE_STYLE = resources.files("pseudolabel.report").joinpath("page.css").read_text(encoding="utf-8")
PAGE_SCRIPT = resources.files("pseudolabel.report").joinpath("page.js").read_text(encoding="utf-8")

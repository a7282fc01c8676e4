"""Plain id PNGs (Cityscapes ``labelIds`` style): one grey PNG of class ids per image, 255 kept."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pseudolabel.core.components import Component
from pseudolabel.core.images import write_image
from pseudolabel.core.safe_paths import id_path
from pseudolabel.export.item import ExportItem

if TYPE_CHECKING:
    from pseudolabel.datasets.base import Dataset
    from pseudolabel.export.run import ExportRequest


ID_PNGS = Component(
    "exporter", "cityscapes-ids", "One grey PNG of class ids per image (Cityscapes labelIds style), 255 kept.",
    "pseudolabel.export.id_pngs:build",
)  # fmt: skip


class IdPngWriter:
    """Writes ``<out>/<id>.png`` per image."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def add(self, item: ExportItem) -> None:
        write_image(id_path(self.out, item.image_id, ".png"), item.label_map)

    def finish(self) -> None:
        """Nothing left: every image was written when added."""


def build(dataset: Dataset, request: ExportRequest, options: None) -> IdPngWriter:
    """The id PNG writer."""
    return IdPngWriter(request.out)

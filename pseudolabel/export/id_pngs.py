"""Plain id PNGs (Cityscapes ``labelIds`` style): one grey PNG of class ids per image, 255 kept."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.export.item import ExportItem
from pseudolabel.images import write_image
from pseudolabel.safe_paths import id_path


class IdPngWriter:
    """Writes ``<out>/<id>.png`` per image."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def add(self, item: ExportItem) -> None:
        write_image(id_path(self.out, item.image_id, ".png"), item.label_map)

    def finish(self) -> None:
        """Nothing left: every image was written when added."""

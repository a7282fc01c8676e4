"""What every export format receives for one image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pseudolabel.export.regions import Region


@dataclass(frozen=True)
class ExportItem:
    """One image to export.

    Attributes:
        image_id: the dataset's id (file stem, or a relative path without suffix).
        number: the image's stable numeric id: COCO's own id for a COCO source, else its
            1-based position in the split list, so exports of one split always agree.
        image_path: the image file.
        file_name: the image's path under the dataset's image folder (POSIX separators).
        label_map: uint8 [H, W] class ids, 255 unsure.
        regions: the scored regions to write.
        subset: ``train`` (the exported split) or ``val`` (a validation split exported beside it).
    """

    image_id: str
    number: int
    image_path: Path
    file_name: str
    label_map: np.ndarray
    regions: list[Region]
    subset: str = "train"


class ExportWriter(Protocol):
    """A format: ``add`` writes or collects one image, ``finish`` writes what is left."""

    def add(self, item: ExportItem) -> None: ...

    def finish(self) -> None: ...

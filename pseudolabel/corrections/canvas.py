"""One image's label map painted from annotations, whatever their order."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pseudolabel.core.masks import IGNORE_INDEX


@dataclass
class Canvas:
    """A label map being painted: pixels no annotation covers are background (0); a pixel two
    classes claim cannot be settled and is unsure (255), as is one painted with the unsure label.

    Attributes:
        image_id: the dataset's id of the image.
        height, width: the size the annotations were made at, in pixels.
    """

    image_id: str
    height: int
    width: int
    labels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.labels = np.zeros((self.height, self.width), np.uint8)

    def paint(self, mask: np.ndarray, class_id: int) -> None:
        """Claim bool [H, W] ``mask`` for ``class_id`` (255: unsure)."""
        if mask.shape != self.labels.shape:
            raise ValueError(f"an annotation of {self.image_id} is {mask.shape}, its image {self.labels.shape}")
        clash = mask & (self.labels != 0) & (self.labels != class_id)
        self.labels[mask & (self.labels == 0)] = class_id
        self.labels[clash] = IGNORE_INDEX


@dataclass(frozen=True)
class Unreadable:
    """An image a reader could not paint, and why (reported; the others go on)."""

    image_id: str
    why: str

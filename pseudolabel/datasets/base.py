"""The one sample type every stage reads, and the dataset interface that produces it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.core.errors import ConfigError, UnsafePathError, listed
from pseudolabel.core.images import DEFAULT_MAX_IMAGE_PIXELS, load_rgb
from pseudolabel.core.prompts import PromptSet
from pseudolabel.core.safe_paths import check_id, resolve_inside


@dataclass(frozen=True)
class Sample:
    """One image and what is known about it.

    Attributes:
        image_id: unique id within the dataset; also the output file name (without ``.png``).
        rgb: uint8 [H, W, 3], upright.
        classes: sorted dataset class ids present in the image (never 0 = background): the
            image-level labels (a pixel label map is a ``label_map``).
        gt_path: ground-truth mask file, or None when the dataset has none for this image.
    """

    image_id: str
    rgb: np.ndarray
    classes: tuple[int, ...]
    gt_path: Path | None


class Dataset:
    """A split of a dataset: ids, image files, image-level labels and GT masks.

    Subclasses implement ``ids``, ``image_path``, ``classes`` and ``gt_path`` and set
    ``image_root``; ``load`` decodes one sample and is a pure function of the id, so shards and
    workers can call it freely. Entries a subclass refuses while reading its lists (an image
    outside the folder, an id that cannot name a file) stay in ``ids`` with their reason in
    ``rejected``, so a run records each as failed, naming the line or record, and goes on.
    """

    name: str = "dataset"

    def __init__(self, prompts: PromptSet, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.prompts = prompts
        self.max_image_pixels = max_image_pixels
        self.image_root = Path(".")
        """Images must resolve (symlinks followed) inside this folder."""
        self.rejected: dict[str, str] = {}
        """Refused entries: id -> why."""
        self.notices: list[str] = []
        """What reading the split left out or changed, one line each, for the user to see first."""

    @property
    def class_names(self) -> list[str]:
        """Class names by id, 0 = background."""
        return self.prompts.class_names

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return self.prompts.num_classes

    def ids(self) -> list[str]:
        """Image ids of the split, in a stable order."""
        raise NotImplementedError

    def image_path(self, image_id: str) -> Path:
        """The image file of ``image_id``."""
        raise NotImplementedError

    def numeric_ids(self) -> dict[str, int]:
        """Each id's stable number for formats that want one (COCO's ``image_id``): its 1-based
        position in the split list, so every export of one split agrees whatever is missing."""
        return {image_id: index for index, image_id in enumerate(self.ids(), start=1)}

    def classes(self, image_id: str) -> tuple[int, ...]:
        """Sorted class ids present in the image (background excluded)."""
        raise NotImplementedError

    def gt_path(self, image_id: str) -> Path | None:
        """Ground-truth mask of ``image_id``, or None."""
        raise NotImplementedError

    def prepare_gt(self, on_progress: Callable[[int, int], None] | None = None) -> None:
        """Make GT masks available before they are read (COCO renders its annotations once);
        ``on_progress(done, total)`` reports the work. Nothing to do for most datasets."""

    def load(self, image_id: str) -> Sample:
        """Decode one sample.

        Raises:
            SampleError: the image or its mask cannot be read. UnsafePathError: a refused entry,
                or an image that resolves outside ``image_root``.
        """
        if image_id in self.rejected:
            raise UnsafePathError(self.rejected[image_id])
        check_id(image_id)
        path = resolve_inside(self.image_root, self.image_path(image_id), f"image of {image_id!r}:")
        rgb = load_rgb(path, self.max_image_pixels)
        return Sample(image_id, rgb, self.classes(image_id), self.gt_path(image_id))


class DatasetView(Dataset):
    """Another dataset's split seen through a change a subclass makes; all else is the inner one's."""

    def __init__(self, inner: Dataset) -> None:
        super().__init__(inner.prompts, inner.max_image_pixels)
        self.inner = inner
        self.name = inner.name
        self.split = getattr(inner, "split", "")
        self.image_root = inner.image_root
        self.rejected = inner.rejected
        self.notices = inner.notices

    def ids(self) -> list[str]:
        return self.inner.ids()

    def image_path(self, image_id: str) -> Path:
        return self.inner.image_path(image_id)

    def numeric_ids(self) -> dict[str, int]:
        return self.inner.numeric_ids()

    def classes(self, image_id: str) -> tuple[int, ...]:
        return self.inner.classes(image_id)

    def gt_path(self, image_id: str) -> Path | None:
        return self.inner.gt_path(image_id)

    def prepare_gt(self, on_progress: Callable[[int, int], None] | None = None) -> None:
        self.inner.prepare_gt(on_progress)


class WithoutLabels(DatasetView):
    """Another dataset's split with its image-level labels hidden (zero-shot: ``--labels none``)."""

    def classes(self, image_id: str) -> tuple[int, ...]:
        return ()


class OnlyIds(DatasetView):
    """Another dataset's split limited to listed ids (``--ids FILE``), in split order; numeric ids
    stay the whole split's, so a partial export agrees with a full one."""

    def __init__(self, inner: Dataset, ids: list[str]) -> None:
        super().__init__(inner)
        known = inner.ids()
        unknown = sorted(set(ids) - set(known))
        if unknown:
            raise ConfigError(f"--ids lists {len(unknown)} id(s) that are not in the split: {listed(unknown)}")
        wanted = set(ids)
        self._ids = [image_id for image_id in known if image_id in wanted]

    def ids(self) -> list[str]:
        return self._ids

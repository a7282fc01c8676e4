"""What ``pseudolabel inspect`` reports about a dataset split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pseudolabel.core.errors import SampleError
from pseudolabel.datasets import Dataset


@dataclass
class DatasetSummary:
    """Counts over a split; ``problems`` lists (image id, message) of images that were skipped."""

    num_images: int = 0
    num_with_gt: int = 0
    images_per_class: list[int] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def summarize_dataset(
    dataset: Dataset, check_images: bool, advance: Callable[[], None] | None = None
) -> DatasetSummary:
    """Count readable images, GT masks and images per class; with ``check_images`` decode every image.

    An image whose labels or pixels cannot be read is recorded in ``problems`` and skipped;
    the others are still counted.
    """
    summary = DatasetSummary(images_per_class=[0] * dataset.num_classes)
    for image_id in dataset.ids():
        try:
            labels = dataset.load(image_id).classes if check_images else dataset.classes(image_id)
        except SampleError as error:
            summary.problems.append((image_id, str(error)))
        else:
            summary.num_images += 1
            summary.num_with_gt += dataset.gt_path(image_id) is not None
            for class_id in labels:
                summary.images_per_class[class_id] += 1
        if advance:
            advance()
    return summary

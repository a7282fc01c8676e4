"""Run by test_interop.py under a Python that has Datumaro (CVAT's import library), kept in its
own environment because it pins other numpy, Pillow and OpenCV releases than the tool's.

Usage: python datumaro_check.py EXPORT_FOLDER OUT_NPZ

Imports the folder as Datumaro's ``voc_segmentation`` (what CVAT's "Segmentation mask 1.1"
import runs) and writes OUT_NPZ: per item, the label map its masks paint (Datumaro label index,
in labelmap.txt order) and ``instances``: JSON of each item's instance count.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset


def main(folder: str, out: str) -> None:
    dataset = Dataset.import_from(folder, "voc_segmentation")
    names = [label.name for label in dataset.categories()[AnnotationType.label].items]
    arrays, instances = {}, {}
    for item in dataset:
        masks = [a for a in item.annotations if a.type == AnnotationType.mask]
        height, width = masks[0].image.shape
        label_map = np.zeros((height, width), np.uint8)
        for mask in masks:
            label_map[mask.image.astype(bool)] = mask.label
        arrays[item.id] = label_map
        instances[item.id] = len(masks)
    np.savez_compressed(out, names=np.array(json.dumps(names)), instances=np.array(json.dumps(instances)), **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

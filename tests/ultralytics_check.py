"""Run in a subprocess by test_interop.py: read a YOLO-seg export with Ultralytics itself.

Usage: python ultralytics_check.py DATA_YAML OUT_NPZ [--train]

Writes OUT_NPZ with, per split and image, the label map Ultralytics' own rasterisation of the
label file gives (``polygon2mask`` of each instance at the image's size, class index + 1), and
``summary`` (JSON: per split the image and instance counts its dataset check found). With
``--train``, one epoch of a yaml-built ``yolov8n-seg`` at image size 64 follows, on the CPU.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from ultralytics import YOLO
from ultralytics.data import YOLODataset
from ultralytics.data.utils import check_det_dataset, polygon2mask


def main(data_yaml: str, out: str, train: bool) -> None:
    info = check_det_dataset(data_yaml)
    arrays, summary = {}, {"nc": info["nc"]}
    for split in ("train", "val"):
        dataset = YOLODataset(img_path=info[split], data=info, task="segment", augment=False, imgsz=64)
        summary[split] = {"images": len(dataset.labels), "instances": int(sum(len(x["cls"]) for x in dataset.labels))}
        for label in dataset.labels:
            height, width = label["shape"]
            label_map = np.zeros((height, width), np.uint8)
            for class_index, segment in zip(label["cls"].ravel(), label["segments"], strict=True):
                pixels = np.asarray(segment, np.float64) * [width, height]
                drawn = polygon2mask((height, width), [pixels.ravel()]).astype(bool)
                label_map[drawn] = int(class_index) + 1
            stem = label["im_file"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
            arrays[f"{split}/{stem}"] = label_map
    if train:
        model = YOLO("yolov8n-seg.yaml")
        model.train(data=data_yaml, epochs=1, imgsz=64, batch=2, workers=0, device="cpu", plots=False, amp=False,
                    project=out + ".runs", name="train", exist_ok=True, verbose=False)  # fmt: skip
        summary["trained"] = (model.trainer.save_dir / "weights" / "last.pt").is_file()
    np.savez_compressed(out, summary=np.array(json.dumps(summary)), **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--train" in sys.argv[3:])

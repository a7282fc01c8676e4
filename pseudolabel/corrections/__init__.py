"""Corrected annotations back into label maps: ``pseudolabel import`` reads what a person fixed in
Label Studio, CVAT, or any COCO or YOLO-seg tool and writes palette PNGs that ``score``,
``report`` and ``train-seg`` take. ``canvas.py`` settles overlaps; one module reads each format."""

"""Pseudo-labels in the formats other tools read: COCO (RLE or polygons), Ultralytics YOLO-seg,
and plain id PNGs (Cityscapes ``labelIds`` style). ``regions.py`` turns a label map into
regions; one module per format writes them."""

"""Evaluation against ground truth: ``metrics`` (confusion counts, IoU, boundary IoU),
``scoring`` (pairing predictions with GT, per-image figures), ``summary`` (the ``score``
command's report and tables), ``dataset_summary`` (``inspect``) and ``overlay`` (pictures)."""

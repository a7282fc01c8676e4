"""Labelers' scorers turn a Sample into ScoreMaps: ``cam`` (CLIP-ES CAMs, ``cam.py`` over
``clip_es.py``) and ``grounded-sam`` (Grounding DINO boxes, ``detection.py``, and SAM masks,
``grounded_sam.py``); ``options.py`` holds their settings and their declarations, which
``pyproject.toml`` registers (see :mod:`pseudolabel.core.components`)."""

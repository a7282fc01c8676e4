"""Refiners map an image and its ScoreMaps to refined ScoreMaps, so they chain in any order:
``crf`` (DenseCRF) and ``sam`` (CEP point prompts or SEPL automatic masks); ``options.py``
holds their settings and their declarations, which ``pyproject.toml`` registers (see
:mod:`pseudolabel.core.components`)."""

"""Refiners map an image and its ScoreMaps to refined ScoreMaps, so they chain in any order:
``crf`` (DenseCRF) and ``sam`` (CEP point prompts or SEPL automatic masks); ``options.py``
holds their settings. They are built by name from ``pseudolabel.registry.REFINERS``."""

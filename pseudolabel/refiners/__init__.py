"""Refiners take an image and its ScoreMaps and return sharper ScoreMaps: ``crf`` and ``sam``."""

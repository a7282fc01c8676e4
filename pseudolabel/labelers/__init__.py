"""Labelers turn a Sample into ScoreMaps: ``cam`` (CLIP-ES) for now."""

"""Tiny OWLv2 and MM-Grounding-DINO configurations (random weights) for fast tests."""

from __future__ import annotations

import json
from pathlib import Path

from tiny_grounding import TINY_GROUNDING

TINY_OWL = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 128, "patch_size": 16},
    "projection_dim": 32,
}  # fmt: skip
"""OWLv2's layout (CLIP text and vision towers, box and class heads per patch) at 128 px, 64 queries."""
TINY_MM_GROUNDING = {**TINY_GROUNDING, "model_type": "mm-grounding-dino"}
"""MM-Grounding-DINO at :data:`tiny_grounding.TINY_GROUNDING`'s sizes."""


def write_tiny_owl_config(folder: Path) -> Path:
    """The tiny OWLv2 configuration as a JSON file for ``--detector``."""
    path = folder / "tiny_owl.json"
    path.write_text(json.dumps({**TINY_OWL, "model_type": "owlv2"}))
    return path


def write_tiny_mm_grounding_config(folder: Path) -> Path:
    """The tiny MM-Grounding-DINO configuration as a JSON file for ``--detector``."""
    path = folder / "tiny_mm_grounding.json"
    path.write_text(json.dumps(TINY_MM_GROUNDING))
    return path

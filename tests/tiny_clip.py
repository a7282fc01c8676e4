"""A tiny open_clip configuration (random weights) for fast CAM tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pseudolabel.models.clip import ClipModel, build_clip

TINY_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_clip(seed: int = 0) -> ClipModel:
    """The tiny model with seeded random weights on the CPU."""
    torch.manual_seed(seed)
    return build_clip(TINY_CLIP, "random", "cpu")


def write_tiny_config(folder: Path) -> Path:
    """The tiny configuration as a JSON file for ``--clip-model``."""
    path = folder / "tiny_clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return path

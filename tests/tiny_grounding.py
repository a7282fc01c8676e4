"""A tiny Grounding DINO configuration (random weights) for fast tests."""

from __future__ import annotations

import json
from pathlib import Path

TINY_GROUNDING = {
    "backbone_config": {
        "model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
        "window_size": 7, "out_indices": [2, 3, 4], "image_size": 224,
    },
    "text_config": {
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 30522,
    },
    "d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_queries": 30,
    "encoder_n_points": 2, "decoder_n_points": 2,
}  # fmt: skip


def write_tiny_grounding_config(folder: Path) -> Path:
    """The tiny configuration as a JSON file for ``--detector``."""
    path = folder / "tiny_grounding.json"
    path.write_text(json.dumps(TINY_GROUNDING))
    return path

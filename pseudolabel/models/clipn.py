"""CLIPN (ICCV 2023): an open_clip CLIP with a second, "no" text tower.

A CLIPN checkpoint is an open_clip ``CLIP`` state dict (``visual.*``, ``transformer.*``,
``token_embedding``, ...; optionally under ``state_dict`` with DDP ``module.`` prefixes) plus
the "no" tower: ``transformer_no.*``, ``token_embedding_no``, ``positional_embedding_no``,
``ln_final_no``, ``text_projection_no`` and ``prompt_no`` [P, context, width] (learnable prompts,
averaged at inference). The image tower and the "yes" text tower load into an ordinary
:class:`ClipModel`; the "no" tower into :class:`ClipnNoTower`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from pseudolabel.core.errors import WeightsError
from pseudolabel.models.clip import ClipModel, create_clip, read_clip_state_dict
from pseudolabel.models.weights import resolve_weights

CLIPN_ARCH = "ViT-B-16"
"""CLIPN's released weights start from OpenCLIP ViT-B-16 (laion2b, GELU)."""
NO_TOWER_KEYS = ("transformer_no.", "token_embedding_no.", "positional_embedding_no", "ln_final_no.")
NO_TOWER_PARAMETERS = ("text_projection_no", "prompt_no")


class ClipnNoTower(nn.Module):
    """CLIPN's "no" text encoder: text -> embedding of "this is NOT a <text>".

    ``x = token_embedding_no(tokens) + positional_embedding_no + mean(prompt_no)``, the causal
    text transformer, ``ln_final_no``, the end-of-text token, ``@ text_projection_no``.
    """

    def __init__(self, text_cfg: dict[str, Any], embed_dim: int, prompts: int = 16) -> None:
        super().__init__()
        width, context = text_cfg["width"], text_cfg.get("context_length", 77)
        self.transformer_no = open_clip.transformer.Transformer(width, text_cfg["layers"], text_cfg["heads"])
        self.token_embedding_no = nn.Embedding(text_cfg.get("vocab_size", 49408), width)
        self.positional_embedding_no = nn.Parameter(torch.zeros(context, width))
        self.ln_final_no = nn.LayerNorm(width)
        self.text_projection_no = nn.Parameter(torch.zeros(width, embed_dim))
        self.prompt_no = nn.Parameter(torch.zeros(prompts, context, width))
        self.register_buffer("attn_mask", torch.full((context, context), float("-inf")).triu(1), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [T, context] (end-of-text = highest id) -> L2-normalised embeddings [T, D]."""
        x = self.token_embedding_no(tokens) + self.positional_embedding_no + self.prompt_no.mean(dim=0)
        x = self.ln_final_no(self.transformer_no(x, attn_mask=self.attn_mask))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection_no
        return F.normalize(x, dim=-1)


def split_clipn_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(CLIP keys, "no"-tower keys) of a CLIPN state dict."""
    no_tower = {k: v for k, v in state_dict.items() if k.startswith(NO_TOWER_KEYS) or k in NO_TOWER_PARAMETERS}
    clip = {k: v for k, v in state_dict.items() if k not in no_tower}
    return clip, no_tower


def load_clipn(
    weights: str, device: str | torch.device = "cpu", arch: str | dict[str, Any] = CLIPN_ARCH
) -> tuple[ClipModel, ClipnNoTower]:
    """CLIPN's image + "yes" text towers as a :class:`ClipModel`, and its "no" tower.

    Args:
        weights: a CLIPN checkpoint file, the registry name ``clipn_vit_b16`` (placed by hand),
            or ``random`` (both towers randomly initialised).
        arch: open_clip name or config of the CLIP inside (CLIPN's release: ``ViT-B-16``).

    Raises:
        WeightsError: missing file, or a checkpoint without a "no" tower or of another shape.
    """
    path = resolve_weights(weights, "clipn")
    config = dict(arch) if isinstance(arch, dict) else open_clip.get_model_config(arch)
    no_tower = ClipnNoTower(config["text_cfg"], config["embed_dim"])
    if path is None:
        return create_clip(arch, None, device), no_tower.eval().to(device).requires_grad_(False)
    clip_part, no_part = split_clipn_state_dict(read_clip_state_dict(Path(path)))
    if not no_part:
        raise WeightsError(f"{path} has no CLIPN 'no' text tower (transformer_no.*, prompt_no); is it plain CLIP?")
    no_tower.prompt_no = nn.Parameter(torch.zeros_like(no_part.get("prompt_no", no_tower.prompt_no)))
    try:
        no_tower.load_state_dict(no_part, strict=True)
    except RuntimeError as error:
        raise WeightsError(f"CLIPN 'no' tower in {path} does not fit {arch}: {str(error).splitlines()[0]}") from error
    clip = create_clip(arch, clip_part, device, source=str(path))
    return clip, no_tower.eval().to(device).requires_grad_(False)

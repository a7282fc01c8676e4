"""Rename an original Grounding DINO checkpoint (IDEA-Research ``groundingdino_swint_ogc.pth``,
``groundingdino_swinb_cogcoor.pth``) into ``transformers.GroundingDinoForObjectDetection`` keys.

The original code stores fused query/key/value projections (Swin ``attn.qkv``, PyTorch
``MultiheadAttention.in_proj_*``); transformers keeps them as separate ``q/k/v`` linears, so
those tensors are split in three equal row blocks (query, key, value in that order). Buffers
that transformers rebuilds itself (Swin ``relative_position_index``, BERT ``position_ids``)
and the unused BERT pooler are dropped.
"""

from __future__ import annotations

import re

import torch

from pseudolabel.models.weights import RenameRule, renamed

SWIN = "model.backbone.conv_encoder.model.swin"
HIDDEN_NORMS = "model.backbone.conv_encoder.model.hidden_states_norms"

DROPPED = re.compile(r"(relative_position_index|position_ids|^bert\.pooler\.|attn_mask)")

RENAMES: tuple[RenameRule, ...] = (
    # Swin backbone
    (r"^backbone\.0\.patch_embed\.proj\.", f"{SWIN}.embeddings.patch_embeddings.projection."),
    (r"^backbone\.0\.patch_embed\.norm\.", f"{SWIN}.embeddings.norm."),
    (r"^backbone\.0\.norm(\d)\.", lambda m: f"{HIDDEN_NORMS}.stage{int(m.group(1)) + 1}."),
    (r"^backbone\.0\.layers\.", f"{SWIN}.encoder.layers."),
    (r"\.blocks\.(\d+)\.norm1\.", r".blocks.\1.layernorm_before."),
    (r"\.blocks\.(\d+)\.norm2\.", r".blocks.\1.layernorm_after."),
    (r"\.blocks\.(\d+)\.attn\.proj\.", r".blocks.\1.attention.o_proj."),
    (
        r"\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
        r".blocks.\1.attention.relative_position_bias.relative_position_bias_table",
    ),
    # text backbone and projections
    (r"^bert\.", "model.text_backbone."),
    (r"^feat_map\.", "model.text_projection."),
    (r"^input_proj\.", "model.input_proj_vision."),
    # encoder: deformable image layers, text enhancer layers, fusion layers
    (r"^transformer\.encoder\.layers\.(\d+)\.", r"model.encoder.layers.\1.deformable_layer."),
    (r"\.deformable_layer\.norm1\.", ".deformable_layer.self_attn_layer_norm."),
    (r"\.deformable_layer\.norm2\.", ".deformable_layer.final_layer_norm."),
    (r"\.deformable_layer\.linear(\d)\.", r".deformable_layer.fc\1."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.", r"model.encoder.layers.\1.text_enhancer_layer."),
    (r"\.text_enhancer_layer\.norm1\.", ".text_enhancer_layer.layer_norm_before."),
    (r"\.text_enhancer_layer\.norm2\.", ".text_enhancer_layer.layer_norm_after."),
    (r"\.text_enhancer_layer\.linear(\d)\.", r".text_enhancer_layer.fc\1."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.", r"model.encoder.layers.\1.fusion_layer."),
    (r"\.fusion_layer\.gamma_v$", ".fusion_layer.vision_param"),
    (r"\.fusion_layer\.gamma_l$", ".fusion_layer.text_param"),
    (r"\.fusion_layer\.layer_norm_v\.", ".fusion_layer.layer_norm_vision."),
    (r"\.fusion_layer\.layer_norm_l\.", ".fusion_layer.layer_norm_text."),
    (r"\.fusion_layer\.attn\.(values_|out_)?v_proj\.", r".fusion_layer.attn.\1vision_proj."),
    (r"\.fusion_layer\.attn\.(values_|out_)?l_proj\.", r".fusion_layer.attn.\1text_proj."),
    # two-stage heads and queries
    (r"^transformer\.level_embed$", "model.level_embed"),
    (r"^transformer\.tgt_embed\.", "model.query_position_embeddings."),
    (r"^transformer\.enc_output", "model.enc_output"),
    (r"^transformer\.enc_out_bbox_embed\.", "model.encoder_output_bbox_embed."),
    # decoder
    (r"^transformer\.decoder\.norm\.", "model.decoder.layer_norm."),
    (r"^transformer\.decoder\.ref_point_head\.", "model.decoder.reference_points_head."),
    (r"^transformer\.decoder\.bbox_embed\.", "model.decoder.bbox_embed."),
    (r"^transformer\.decoder\.layers\.", "model.decoder.layers."),
    (r"(decoder\.layers\.\d+)\.cross_attn\.", r"\1.encoder_attn."),
    (r"(decoder\.layers\.\d+)\.norm1\.", r"\1.encoder_attn_layer_norm."),
    (r"(decoder\.layers\.\d+)\.ca_text\.", r"\1.encoder_attn_text."),
    (r"(decoder\.layers\.\d+)\.catext_norm\.", r"\1.encoder_attn_text_layer_norm."),
    (r"(decoder\.layers\.\d+)\.norm2\.", r"\1.self_attn_layer_norm."),
    (r"(decoder\.layers\.\d+)\.norm3\.", r"\1.final_layer_norm."),
    (r"(decoder\.layers\.\d+)\.linear(\d)\.", r"\1.fc\2."),
)

FUSED_PROJECTIONS: tuple[tuple[str, tuple[str, str, str]], ...] = (
    (r"\.attn\.qkv\.(weight|bias)$", (".attention.q_proj.", ".attention.k_proj.", ".attention.v_proj.")),
    (r"\.in_proj_(weight|bias)$", (".query.", ".key.", ".value.")),
)
"""Fused projections and the q, k, v names they split into (the suffix keeps weight/bias)."""


def is_original_checkpoint(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for IDEA-Research's layout (``backbone.0.*``, ``transformer.*``, ``bert.*``)."""
    return any(key.startswith("backbone.0.") for key in state_dict) and any(
        key.startswith("transformer.") for key in state_dict
    )


def rename_key(key: str) -> str:
    """The transformers name of one original (non-fused) key."""
    return renamed(key, RENAMES)


def convert_original_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original checkpoint (``module.`` prefixes allowed) -> transformers state dict.

    Fused projections [3E, ...] are split into query, key and value [E, ...] each.
    """
    converted: dict[str, torch.Tensor] = {}
    for original, tensor in state_dict.items():
        key = original.removeprefix("module.")
        if DROPPED.search(key):
            continue
        for pattern, parts in FUSED_PROJECTIONS:
            match = re.search(pattern, key)
            if match:
                stem = rename_key(key[: match.start()] + ".fused")[: -len(".fused")]
                for part, chunk in zip(parts, tensor.chunk(3, dim=0), strict=True):
                    converted[f"{stem}{part}{match.group(1)}"] = chunk.clone()
                break
        else:
            converted[rename_key(key)] = tensor
    return converted

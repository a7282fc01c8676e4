"""Meta's SAM 3 checkpoint (``sam3.pt``, the ``sam3`` package's module names) as a state dict of
transformers' ``Sam3Model``, so that one model class runs either download.

The renaming was written from the module names of both implementations (``sam3`` 0.1.4's
``Sam3Image`` and transformers' ``Sam3Model``) and is checked in ``tests/test_sam3.py`` by
running both on the same random weights. Fused attention projections (the ViT's ``qkv``,
``nn.MultiheadAttention``'s ``in_proj_*``) are split into ``q/k/v_proj``; the ViT's absolute
position table loses its class-token row (transformers has no class token); the text
projection is stored transposed; the ViT's rotary tables are computed by transformers, so
Meta's ``freqs_cis`` buffers are dropped.
"""

from __future__ import annotations

import re

import torch

from pseudolabel.models.weights import RenameRule, renamed

_RENAMES: tuple[RenameRule, ...] = (
    # the image model's keys inside a full SAM 3 checkpoint (the video tracker's are dropped)
    (r"^detector\.", ""),
    # vision: ViT trunk
    (r"^backbone\.vision_backbone\.trunk\.", "vision_encoder.backbone."),
    (r"^(vision_encoder\.backbone\.)pos_embed$", r"\1embeddings.position_embeddings"),
    (r"^(vision_encoder\.backbone\.)patch_embed\.proj\.", r"\1embeddings.patch_embeddings.projection."),
    (r"^(vision_encoder\.backbone\.)ln_pre\.", r"\1layer_norm."),
    (r"^(vision_encoder\.backbone\.)blocks\.(\d+)\.norm([12])\.", r"\1layers.\2.layer_norm\3."),
    (r"^(vision_encoder\.backbone\.)blocks\.(\d+)\.attn\.qkv\.", r"\1layers.\2.attention.qkv."),
    (r"^(vision_encoder\.backbone\.)blocks\.(\d+)\.attn\.proj\.", r"\1layers.\2.attention.o_proj."),
    (r"^(vision_encoder\.backbone\.)blocks\.(\d+)\.mlp\.", r"\1layers.\2.mlp."),
    # vision: feature pyramid
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.(dconv_2x2_0|dconv_2x2|maxpool_2x2)\.",
     r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    # text: CLIP-style encoder and the projection to the detector's width
    (r"^backbone\.language_backbone\.encoder\.", "text_encoder."),
    (r"^text_encoder\.token_embedding\.", "text_encoder.text_model.embeddings.token_embedding."),
    (r"^text_encoder\.positional_embedding$", "text_encoder.text_model.embeddings.position_embedding.weight"),
    (r"^text_encoder\.ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (r"^text_encoder\.text_projection$", "text_encoder.text_projection.weight"),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.",
     r"text_encoder.text_model.encoder.layers.\1.self_attn.out_proj."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_",
     r"text_encoder.text_model.encoder.layers.\1.self_attn.in_proj_"),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.ln_([12])\.",
     r"text_encoder.text_model.encoder.layers.\1.layer_norm\2."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.",
     r"text_encoder.text_model.encoder.layers.\1.mlp.fc1."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.",
     r"text_encoder.text_model.encoder.layers.\1.mlp.fc2."),
    (r"^backbone\.language_backbone\.resizer\.", "text_projection."),
    # geometry (box prompt) encoder and the DETR encoder: the same layer layout
    (r"^geometry_encoder\.encode\.(\d+)\.", r"geometry_encoder.layers.\1."),
    (r"^geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"^geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"^geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    (r"^transformer\.encoder\.layers\.(\d+)\.", r"detr_encoder.layers.\1."),
    (r"^((?:geometry|detr)_encoder\.layers\.\d+\.)cross_attn_image\.", r"\1cross_attn."),
    (r"^((?:geometry|detr)_encoder\.layers\.\d+\.)linear([12])\.", r"\1mlp.fc\2."),
    (r"^((?:geometry|detr)_encoder\.layers\.\d+\.)norm([123])\.", r"\1layer_norm\2."),
    # DETR decoder
    (r"^transformer\.decoder\.", "detr_decoder."),
    (r"^detr_decoder\.presence_token_head\.", "detr_decoder.presence_head."),
    (r"^detr_decoder\.presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (r"^detr_decoder\.norm\.", "detr_decoder.output_layer_norm."),
    (r"^detr_decoder\.bbox_embed\.", "detr_decoder.box_head."),
    (r"^detr_decoder\.instance_bbox_embed\.", "detr_decoder.instance_box_head."),
    (r"^detr_decoder\.boxRPB_embed_([xy])\.", r"detr_decoder.box_rpb_embed_\1."),
    (r"^(detr_decoder\.layers\.\d+\.)ca_text\.", r"\1text_cross_attn."),
    (r"^(detr_decoder\.layers\.\d+\.)cross_attn\.", r"\1vision_cross_attn."),
    (r"^(detr_decoder\.layers\.\d+\.)linear([12])\.", r"\1mlp.fc\2."),
    (r"^(detr_decoder\.layers\.\d+\.)norm1\.", r"\1vision_cross_attn_layer_norm."),
    (r"^(detr_decoder\.layers\.\d+\.)catext_norm\.", r"\1text_cross_attn_layer_norm."),
    (r"^(detr_decoder\.layers\.\d+\.)norm2\.", r"\1self_attn_layer_norm."),
    (r"^(detr_decoder\.layers\.\d+\.)norm3\.", r"\1mlp_layer_norm."),
    # dot-product scoring of queries against the prompt
    (r"^dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"^dot_prod_scoring\.prompt_mlp\.", "dot_product_scoring.text_mlp."),
    (r"^dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"^dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    # mask decoder
    (r"^segmentation_head\.(?:mask_predictor\.)?mask_embed\.", "mask_decoder.mask_embedder."),
    (r"^segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"^segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"^segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (r"^segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
    (r"^segmentation_head\.", "mask_decoder."),
    # every attention's output projection; numbered MLP layers of the decoder heads
    (r"\.(self_attn|cross_attn|text_cross_attn|vision_cross_attn|prompt_cross_attn)\.out_proj\.", r".\1.o_proj."),
    (r"^((?:detr_decoder\.(?:presence_head|box_head|instance_box_head|ref_point_head|box_rpb_embed_[xy]))"
     r"|dot_product_scoring\.text_mlp)\.layers\.(\d+)\.",
     lambda match: f"{match[1]}.layer{int(match[2]) + 1}."),
)  # fmt: skip
_TEXT_ENCODER_OUT_PROJ = re.compile(r"^(text_encoder\.text_model\.encoder\.layers\.\d+\.self_attn)\.o_proj\.")
_DROPPED = re.compile(r"^tracker\.|\.attn\.freqs_cis$")


def is_meta_checkpoint(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds Meta's module names (a ``sam3.pt``) rather than transformers'."""
    return any(key.startswith(("detector.backbone.", "backbone.vision_backbone.")) for key in state)


def meta_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's SAM 3 image-model state dict (with or without the ``detector.`` prefix of a full
    checkpoint; ``tracker.`` keys dropped) -> ``Sam3Model``'s."""
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if _DROPPED.search(key):
            continue
        new_key = _rename(key)
        if new_key == "vision_encoder.backbone.embeddings.position_embeddings":
            tensor = tensor[:, 1:]  # [1, 1 + grid^2, C]: the class token's row goes
        elif new_key == "text_encoder.text_projection.weight":
            tensor = tensor.T  # [width, projection] -> Linear's [projection, width]
        converted.update(_split_projections(new_key, tensor))
    return converted


def _rename(key: str) -> str:
    # CLIP's text layers keep torch's ``out_proj`` name in transformers
    return _TEXT_ENCODER_OUT_PROJ.sub(r"\1.out_proj.", renamed(key, _RENAMES))


def _split_projections(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """A fused query/key/value projection ``[3C, ...]`` as three ``q/k/v_proj`` tensors."""
    fused = re.match(r"^(.*)\.(?:qkv\.(weight|bias)|in_proj_(weight|bias))$", key)
    if fused is None:
        return {key: tensor}
    prefix, kind = fused[1], fused[2] or fused[3]
    return {f"{prefix}.{name}_proj.{kind}": part for name, part in zip("qkv", tensor.chunk(3), strict=True)}

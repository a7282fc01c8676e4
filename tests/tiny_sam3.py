"""A tiny SAM 3 (random weights) for fast tests: transformers' configuration as a JSON file for
``--sam3-model``, and the same sizes built from Meta's ``sam3`` modules for the comparison with
Meta's code (``meta_tiny_sam3``; needs the ``sam3`` package)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

RESOLUTION = 224  # 16 x 16 patches of 14 pixels; the published model reads 1008 (72 x 72)
WIDTH, HEADS, FEEDFORWARD, LAYERS, QUERIES = 32, 2, 64, 2, 20
TINY_SAM3 = {
    "vision_config": {
        "backbone_config": {
            "model_type": "sam3_vit_model", "hidden_size": 64, "intermediate_size": 296, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": RESOLUTION, "patch_size": 14, "window_size": 8,
            "global_attn_indexes": [1], "pretrain_image_size": 112,
        },
        "fpn_hidden_size": WIDTH, "backbone_feature_sizes": [[64, 64], [32, 32], [16, 16]],
    },
    "text_config": {
        "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
        "max_position_embeddings": 32, "projection_dim": 512, "hidden_act": "gelu",
    },
    "geometry_encoder_config": {"hidden_size": WIDTH, "num_layers": LAYERS, "num_attention_heads": HEADS,
                                "intermediate_size": FEEDFORWARD},
    "detr_encoder_config": {"hidden_size": WIDTH, "num_layers": LAYERS, "num_attention_heads": HEADS,
                            "intermediate_size": FEEDFORWARD},
    "detr_decoder_config": {"hidden_size": WIDTH, "num_layers": LAYERS, "num_attention_heads": HEADS,
                            "intermediate_size": FEEDFORWARD, "num_queries": QUERIES},
    "mask_decoder_config": {"hidden_size": WIDTH, "num_attention_heads": HEADS},
}  # fmt: skip
"""The published layout (ViT with windowed and global RoPE attention, 4-level FPN, CLIP text
encoder, geometry encoder, DETR encoder/decoder with presence token, mask decoder) at small sizes."""


def write_tiny_sam3_config(folder: Path) -> Path:
    """The tiny configuration as a JSON file for ``--sam3-model``."""
    path = folder / "tiny_sam3.json"
    path.write_text(json.dumps(TINY_SAM3))
    return path


def meta_tiny_sam3() -> torch.nn.Module:
    """Meta's ``Sam3Image`` at :data:`TINY_SAM3`'s sizes, built as ``sam3.model_builder`` builds the
    published one (same classes and settings; dropout 0; no activation checkpointing; the decoder's
    and position encoding's CUDA-only precomputed caches off), seeded random weights in eval mode.
    Parameters Meta leaves uninitialised (``torch.empty``: the text encoder's position table and
    projection) are drawn here, and the box head's last layer (zero at init) too, so boxes depend
    on the image. The presence head's bias is set and the query scores spread (a random head scores every
    query ~0.25, so nothing would pass Meta's 0.5)."""
    from open_clip import tokenizer as clip_tokenizer
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
    from sam3.model.model_misc import MultiheadAttentionWrapper as Attention
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone

    torch.manual_seed(0)

    def attention(batch_first: bool = True) -> torch.nn.Module:
        return Attention(num_heads=HEADS, dropout=0.0, embed_dim=WIDTH, batch_first=batch_first)

    def positions() -> torch.nn.Module:
        return PositionEmbeddingSine(num_pos_feats=WIDTH, normalize=True, scale=None, temperature=10000)

    def encoder_layer(batch_first: bool, at_attention: bool, at_keys: bool) -> torch.nn.Module:
        return TransformerEncoderLayer(
            activation="relu",
            d_model=WIDTH,
            dim_feedforward=FEEDFORWARD,
            dropout=0.0,
            pos_enc_at_attn=at_attention,
            pos_enc_at_cross_attn_keys=at_keys,
            pos_enc_at_cross_attn_queries=False,
            pre_norm=True,
            self_attention=attention(batch_first),
            cross_attention=attention(batch_first),
        )

    backbone = TINY_SAM3["vision_config"]["backbone_config"]
    vit = ViT(
        img_size=RESOLUTION,
        pretrain_img_size=backbone["pretrain_image_size"],
        patch_size=14,
        embed_dim=backbone["hidden_size"],
        depth=backbone["num_hidden_layers"],
        num_heads=2,
        mlp_ratio=4.625,
        norm_layer="LayerNorm",
        drop_path_rate=0.0,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=(1,),
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=8,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
    )
    neck = Sam3DualViTDetNeck(
        position_encoding=positions(), d_model=WIDTH, scale_factors=[4.0, 2.0, 1.0, 0.5], trunk=vit, add_sam2_neck=False
    )
    bpe = os.path.join(os.path.dirname(clip_tokenizer.__file__), "bpe_simple_vocab_16e6.txt.gz")
    text = VETextEncoder(tokenizer=SimpleTokenizer(bpe_path=bpe), d_model=WIDTH, width=64, heads=2, layers=2)
    encoder = TransformerEncoderFusion(
        layer=encoder_layer(True, True, False),
        num_layers=LAYERS,
        d_model=WIDTH,
        num_feature_levels=1,
        frozen=False,
        use_act_checkpoint=False,
        add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
    )
    decoder = TransformerDecoder(
        layer=TransformerDecoderLayer(
            activation="relu",
            d_model=WIDTH,
            dim_feedforward=FEEDFORWARD,
            dropout=0.0,
            cross_attention=Attention(num_heads=HEADS, dropout=0.0, embed_dim=WIDTH),
            n_heads=HEADS,
            use_text_cross_attention=True,
        ),
        num_layers=LAYERS,
        num_queries=QUERIES,
        return_intermediate=True,
        box_refine=True,
        num_o2m_queries=0,
        dac=True,
        boxRPB="log",
        d_model=WIDTH,
        frozen=False,
        interaction_layer=None,
        dac_use_selfatt_ln=True,
        resolution=None,
        stride=None,
        use_act_checkpoint=False,
        presence_token=True,
    )
    scoring = DotProductScoring(
        d_model=WIDTH,
        d_proj=WIDTH,
        prompt_mlp=MLP(
            input_dim=WIDTH,
            hidden_dim=FEEDFORWARD,
            output_dim=WIDTH,
            num_layers=2,
            dropout=0.0,
            residual=True,
            out_norm=torch.nn.LayerNorm(WIDTH),
        ),
    )
    segmentation = UniversalSegmentationHead(
        hidden_dim=WIDTH,
        upsampling_stages=3,
        aux_masks=False,
        presence_head=False,
        dot_product_scorer=None,
        act_ckpt=False,
        cross_attend_prompt=Attention(num_heads=HEADS, dropout=0, embed_dim=WIDTH),
        pixel_decoder=PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=WIDTH),
    )
    geometry = SequenceGeometryEncoder(
        pos_enc=positions(),
        encode_boxes_as_points=False,
        points_direct_project=True,
        points_pool=True,
        points_pos_enc=True,
        boxes_direct_project=True,
        boxes_pool=True,
        boxes_pos_enc=True,
        d_model=WIDTH,
        num_layers=LAYERS,
        layer=encoder_layer(False, False, True),
        use_act_ckpt=False,
        add_cls=True,
        add_post_encode_proj=True,
    )
    model = Sam3Image(
        backbone=SAM3VLBackbone(visual=neck, text=text, scalp=1),
        transformer=TransformerWrapper(encoder=encoder, decoder=decoder, d_model=WIDTH),
        input_geometry_encoder=geometry, segmentation_head=segmentation, num_feature_levels=1,
        o2m_mask_predict=True, dot_prod_scoring=scoring, use_instance_query=False, multimask_output=True,
        inst_interactive_predictor=None, matcher=None,
    )  # fmt: skip
    with torch.no_grad():
        text.encoder.positional_embedding.normal_(std=0.01)
        text.encoder.text_projection.normal_(std=0.05)
        decoder.bbox_embed.layers[-1].weight.normal_(std=0.1)
        decoder.presence_token_head.layers[-1].bias.fill_(-0.75)  # presence ~0.65: some pass Meta's 0.5, some not
        scoring.hs_proj.weight.mul_(8.0)  # query scores spread as trained ones do
    return model.eval()


def tiny_sam3(presence_bias: float = 2.0, query_scale: float = 200.0) -> torch.nn.Module:
    """transformers' ``Sam3Model`` at :data:`TINY_SAM3`'s sizes, seeded random weights in eval mode,
    with the presence head's last bias set and the query projection of the scoring scaled, so that
    Meta's 0.5 keeps some queries and not others (a random model scores every query ~0.25)."""
    from transformers import Sam3Config, Sam3Model

    torch.manual_seed(0)
    model = Sam3Model(Sam3Config(**TINY_SAM3)).eval()
    with torch.no_grad():
        model.detr_decoder.presence_head.layer3.bias.fill_(presence_bias)
        model.dot_product_scoring.query_proj.weight.mul_(query_scale)
    model.requires_grad_(False)
    return model

"""A tiny randomly initialised SAM (segment_anything modules at small sizes) for fast tests."""

from __future__ import annotations

import torch


def tiny_sam():
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=128, patch_size=16, embed_dim=32, depth=2, num_heads=2, out_chans=32, window_size=4,
            global_attn_indexes=(1,), use_rel_pos=True, qkv_bias=True,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128), mask_in_chans=8
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
            transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()  # fmt: skip

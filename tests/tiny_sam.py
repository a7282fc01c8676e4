"""A tiny randomly initialised SAM (segment_anything modules at small sizes) for fast tests."""

from __future__ import annotations

import torch


def _tiny(modeling, decoder):
    """A seeded random SAM of ``modeling``'s classes (``segment_anything.modeling`` or HQ-SAM's) at
    128 px with 32 channels; ``decoder(transformer)`` makes its mask decoder."""
    torch.manual_seed(0)
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            img_size=128, patch_size=16, embed_dim=32, depth=2, num_heads=2, out_chans=32, window_size=4,
            global_attn_indexes=(1,), use_rel_pos=True, qkv_bias=True,
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128), mask_in_chans=8
        ),
        mask_decoder=decoder(modeling.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2)),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()  # fmt: skip


def tiny_sam():
    from segment_anything import modeling

    return _tiny(modeling, lambda transformer: modeling.MaskDecoder(
        num_multimask_outputs=3, transformer=transformer, transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32,
    ))  # fmt: skip


def build_tiny_sam(variant: str, checkpoint: str, device: str):
    """A stand-in for ``pseudolabel.models.sam.build_sam``: :func:`tiny_sam` whatever is asked for."""
    return tiny_sam()


def use_tiny_sam_in_this_process() -> None:
    """``build_sam`` gives :func:`tiny_sam` in this process: a Ray worker's ``worker_process_setup_hook``
    (a test's monkeypatch does not reach another process)."""
    import pseudolabel.models.sam

    pseudolabel.models.sam.build_sam = build_tiny_sam


def tiny_hq_sam():
    """HQ-SAM (``segment_anything_hq`` modules) at the sizes of :func:`tiny_sam`."""
    from segment_anything_hq import modeling

    return _tiny(modeling, lambda transformer: modeling.MaskDecoderHQ(
        num_multimask_outputs=3, transformer=transformer, transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32,
        vit_dim=32,
    ))  # fmt: skip


TINY_SAM2_OVERRIDES = (
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.image_encoder.neck.d_model=32",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
)
"""SAM 2.1 Hiera-T's config with a 5-block, 16-channel trunk and 32-channel features (SAM 2 keeps its
1024-pixel input: the predictor assumes 256/128/64 feature grids)."""


def tiny_sam2():
    """A randomly initialised small SAM 2.1 built by the ``sam2`` package from its Hiera-T config."""
    from pseudolabel.models.sam2_image import build_sam2_model

    torch.manual_seed(0)
    return build_sam2_model("sam2.1_hiera_t", "random", "cpu", TINY_SAM2_OVERRIDES)


def make_confident(sam, decoder_attributes=("output_hypernetworks_mlps",)):
    """Make a random SAM's masks stable and its predicted IoUs high, so that an automatic mask
    generator at its published thresholds keeps one: the IoU head's last bias is raised and the
    mask hypernetworks' last layers are scaled up (logits far from 0, so the stability score is
    high). A random decoder gives nearly one mask whatever the point, so NMS leaves about one.
    Returns ``sam``."""
    decoder = sam.mask_decoder if hasattr(sam, "mask_decoder") else sam.sam_mask_decoder
    with torch.no_grad():
        decoder.iou_prediction_head.layers[-1].bias.fill_(4.0)
        for name in decoder_attributes:
            modules = getattr(decoder, name)
            for mlp in modules if isinstance(modules, torch.nn.ModuleList) else [modules]:
                mlp.layers[-1].weight.mul_(2000.0)
                mlp.layers[-1].bias.mul_(2000.0)
    return sam

"""CLIP blocks with their linear weights cast once to the autocast dtype compute what the
uncast weights compute under the same autocast (bit for bit: autocast would cast the same weights to
the same bf16 values on every call), weights packed for oneDNN compute the same within bf16
rounding, a QuickGELU MLP folded into SiLU computes the module's MLP, and a CAM labeler holding
cast weights pickles without them."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from tiny_clip import TINY_CLIP, tiny_clip

from pseudolabel.labelers.clip_es import ClipEsCam, gradcam_last_block
from pseudolabel.labelers.options import CamOptions
from pseudolabel.models.clip import block_forward, block_weights, build_clip, can_pack_bf16_weights


@pytest.mark.parametrize("need_attention", [False, True])
def test_a_block_with_bf16_weights_equals_autocast_casting_per_call(need_attention: bool) -> None:
    block = tiny_clip().model.visual.transformer.resblocks[1]
    weights = block_weights(block, torch.bfloat16)
    assert {tensor.dtype for linear in (weights.in_proj, weights.fc) for tensor in linear} == {torch.bfloat16}
    tokens = torch.randn(2, 13, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cast, cast_attention = block_forward(block, tokens, need_attention, weights=weights)
        per_call, per_call_attention = block_forward(block, tokens, need_attention)
    assert torch.equal(cast, per_call)
    if need_attention:
        assert torch.equal(cast_attention, per_call_attention)


PACKING = pytest.mark.skipif(
    not can_pack_bf16_weights(torch.device("cpu")), reason="PyTorch's oneDNN has no bf16 on this CPU"
)


@PACKING
@pytest.mark.parametrize("need_attention", [False, True])
def test_a_block_with_packed_bf16_weights_equals_autocast_casting_per_call(need_attention: bool) -> None:
    block = tiny_clip().model.visual.transformer.resblocks[1]
    weights = block_weights(block, torch.bfloat16, packed=True)
    assert all(linear[0].is_mkldnn for linear in (weights.in_proj, weights.out_proj, weights.fc, weights.proj))
    tokens = torch.randn(2, 13, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        packed, packed_attention = block_forward(block, tokens, need_attention, weights=weights)
        per_call, per_call_attention = block_forward(block, tokens, need_attention)
    # the same bf16 products; another oneDNN kernel for the packed layout may round the last bf16 bit
    torch.testing.assert_close(packed.float(), per_call.float(), rtol=1.6e-2, atol=1e-2)
    if need_attention:
        torch.testing.assert_close(packed_attention, per_call_attention, rtol=1.6e-2, atol=1e-3)


@PACKING
def test_a_bf16_cam_packs_every_block_but_the_one_gradcam_differentiates() -> None:
    cam = ClipEsCam(tiny_clip(), CamOptions(), autocast_dtype=torch.bfloat16)
    assert [weights.fc[0].is_mkldnn for weights in cam.cast_weights()] == [True] * (len(cam.cast_weights()) - 1) + [
        False
    ]
    fp32 = ClipEsCam(tiny_clip(), CamOptions())
    assert not any(weights.fc[0].is_mkldnn for weights in fp32.cast_weights())


def test_weights_as_stored_are_the_parameters_without_a_copy() -> None:
    gelu_clip = build_clip({**TINY_CLIP, "quick_gelu": False}, "random", "cpu")
    block = gelu_clip.model.visual.transformer.resblocks[0]
    weights = block_weights(block)
    for linear, layer in [(weights.in_proj, (block.attn.in_proj_weight, block.attn.in_proj_bias)),
                          (weights.out_proj, (block.attn.out_proj.weight, block.attn.out_proj.bias)),
                          (weights.fc, (block.mlp.c_fc.weight, block.mlp.c_fc.bias)),
                          (weights.proj, (block.mlp.c_proj.weight, block.mlp.c_proj.bias))]:  # fmt: skip
        assert [tensor.data_ptr() for tensor in linear] == [tensor.data_ptr() for tensor in layer]
        assert not any(tensor.requires_grad for tensor in linear)
    assert weights.activation is block.mlp.gelu


def test_quick_gelu_is_folded_into_silu_with_the_mlp_unchanged() -> None:
    block = tiny_clip().model.visual.transformer.resblocks[0]
    weights = block_weights(block)
    torch.testing.assert_close(weights.fc[0], 1.702 * block.mlp.c_fc.weight, rtol=0, atol=0)
    assert weights.in_proj[0].data_ptr() == block.attn.in_proj_weight.data_ptr()
    hidden = torch.randn(2, 13, 64)
    with torch.no_grad():
        folded = F.linear(weights.activation(F.linear(hidden, *weights.fc)), *weights.proj)
        torch.testing.assert_close(folded, block.mlp(hidden), atol=1e-6, rtol=1e-5)


def test_gradcam_with_bf16_weights_equals_autocast_casting_per_call() -> None:
    clip = tiny_clip()
    cam = ClipEsCam(clip, CamOptions(), autocast_dtype=torch.bfloat16)
    tokens = torch.randn(1, 1 + 12, 64)
    texts = torch.nn.functional.normalize(torch.randn(4, clip.model.visual.output_dim), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = gradcam_last_block(clip, tokens, texts, 2, cam.cast_weights()[-1])
        per_call = gradcam_last_block(clip, tokens, texts, 2)
    for got, expected in zip(cast, per_call, strict=True):
        assert torch.equal(got, expected)


def test_a_clip_es_cam_pickles_without_its_cast_weights() -> None:
    """A Ray worker receives the labeler pickled: the copy leaves the cast weights out and casts its own."""
    cam = ClipEsCam(tiny_clip(), CamOptions(attention_layers=2), autocast_dtype=torch.bfloat16)
    images = torch.randn(1, 3, 2 * cam.clip.patch_size, 3 * cam.clip.patch_size)
    with torch.no_grad():
        tokens, attention, _ = cam._through_window_blocks(images)
        assert cam.cast_weights() is cam.cast_weights() and cam.cast_weights()
        copy = pickle.loads(pickle.dumps(cam))
        assert copy._weights == []
        copied_tokens, copied_attention, _ = copy._through_window_blocks(images)
    assert torch.equal(copied_tokens, tokens) and torch.equal(copied_attention, attention)

"""CLIP blocks with their linear weights cast once to the autocast dtype compute what the
modules compute under the same autocast (bit for bit: autocast would cast the same weights to
the same bf16 values on every call), and a CAM labeler holding such weights pickles without them."""

from __future__ import annotations

import pickle

import pytest
import torch
from tiny_clip import tiny_clip

from pseudolabel.labelers.clip_es import ClipEsCam, gradcam_last_block
from pseudolabel.labelers.options import CamOptions
from pseudolabel.models.clip import block_forward, block_weights


@pytest.mark.parametrize("need_attention", [False, True])
def test_a_block_with_bf16_weights_equals_the_modules_under_bf16_autocast(need_attention: bool) -> None:
    block = tiny_clip().model.visual.transformer.resblocks[1]
    weights = block_weights(block, torch.bfloat16)
    assert {tensor.dtype for linear in (weights.in_proj, weights.fc) for tensor in linear} == {torch.bfloat16}
    tokens = torch.randn(2, 13, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cast, cast_attention = block_forward(block, tokens, need_attention, weights=weights)
        modules, module_attention = block_forward(block, tokens, need_attention)
    assert torch.equal(cast, modules)
    if need_attention:
        assert torch.equal(cast_attention, module_attention)


def test_stored_weights_are_the_parameters_without_a_copy() -> None:
    block = tiny_clip().model.visual.transformer.resblocks[0]
    weights = block_weights(block)
    assert weights.fc[0].data_ptr() == block.mlp.c_fc.weight.data_ptr()
    assert not weights.fc[0].requires_grad


def test_gradcam_with_bf16_weights_equals_the_modules() -> None:
    clip = tiny_clip()
    cam = ClipEsCam(clip, CamOptions(), autocast_dtype=torch.bfloat16)
    tokens = torch.randn(1, 1 + 12, 64)
    texts = torch.nn.functional.normalize(torch.randn(4, clip.model.visual.output_dim), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = gradcam_last_block(clip, tokens, texts, 2, cam.cast_weights()[-1])
        modules = gradcam_last_block(clip, tokens, texts, 2)
    for got, expected in zip(cast, modules, strict=True):
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

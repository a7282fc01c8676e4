"""The CLIPN checkpoint loader: format, "no" tower forward against open_clip's own text encoder, errors."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from tiny_clip import TINY_CLIP

from pseudolabel.core.errors import WeightsError
from pseudolabel.models.clipn import ClipnNoTower, load_clipn

TINY_CLIPN = {**TINY_CLIP, "quick_gelu": False}  # CLIPN starts from OpenCLIP laion2b weights (GELU)


def _clip(seed: int) -> open_clip.model.CLIP:
    torch.manual_seed(seed)
    config = dict(TINY_CLIPN)
    return open_clip.model.CLIP(config.pop("embed_dim"), config.pop("vision_cfg"), config.pop("text_cfg"), **config)


def _clipn_checkpoint(path: Path) -> tuple[dict, dict]:
    """A randomly initialised CLIPN checkpoint as its training script saves it (DDP, under state_dict)."""
    yes, no = _clip(1), _clip(2)
    state = dict(yes.state_dict())
    text = {k: v for k, v in no.state_dict().items() if k.startswith(("transformer.", "token_embedding", "ln_final"))}
    for key, value in text.items():
        state[key.replace("transformer.", "transformer_no.", 1).replace("token_embedding.", "token_embedding_no.")
              .replace("ln_final.", "ln_final_no.")] = value  # fmt: skip
    state["positional_embedding_no"] = no.positional_embedding.detach()
    state["text_projection_no"] = no.text_projection.detach()
    state["prompt_no"] = 0.02 * torch.randn(16, 77, TINY_CLIP["text_cfg"]["width"])
    torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state, {"no_model": no}


def test_clipn_checkpoint_loads_and_the_no_tower_matches_open_clip(tmp_path: Path) -> None:
    path = tmp_path / "clipn.pt"
    state, extra = _clipn_checkpoint(path)
    clip, no_tower = load_clipn(str(path), "cpu", arch=TINY_CLIPN)
    assert torch.equal(clip.model.visual.proj, state["visual.proj"])  # image + "yes" towers are the CLIP part
    # independent: open_clip's own encode_text on a CLIP carrying the "no" weights, with the mean
    # learnable prompt folded into the positional embedding (both are added to the token embeddings)
    reference = extra["no_model"].eval()
    with torch.no_grad():
        reference.positional_embedding += state["prompt_no"].mean(dim=0)
        tokens = clip.tokenizer(["a photo of a cat.", "a photo of a dog."])
        expected = F.normalize(reference.encode_text(tokens), dim=-1)
        torch.testing.assert_close(no_tower(tokens), expected, atol=1e-5, rtol=1e-5)


def test_plain_clip_is_not_clipn_and_missing_files_are_named(tmp_path: Path) -> None:
    torch.save(_clip(0).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="has no CLIPN 'no' text tower"):
        load_clipn(str(tmp_path / "plain.pt"), arch=TINY_CLIPN)
    with pytest.raises(WeightsError, match=r"clipn_vit_b16\.pt"):
        load_clipn("clipn_vit_b16")
    assert isinstance(load_clipn("random", arch=TINY_CLIPN)[1], ClipnNoTower)

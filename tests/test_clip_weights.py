"""CLIP weight files: open_clip state dicts, OpenAI-format state dicts and TorchScript archives."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tiny_clip import TINY_CLIP, tiny_clip

from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.models.clip import build_clip, is_torchscript_archive


def _same_weights(first, second) -> bool:
    return all(
        torch.equal(a, b)
        for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    )


def test_open_clip_state_dict_file_loads_with_weights_only(tmp_path: Path) -> None:
    source = tiny_clip(seed=1)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.model.state_dict().items()}}, path)
    assert not is_torchscript_archive(path)
    assert _same_weights(build_clip(TINY_CLIP, str(path)), source)


def test_openai_format_state_dict_drops_its_metadata(tmp_path: Path) -> None:
    source = tiny_clip(seed=2)
    state = dict(source.model.state_dict())
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    torch.save(state, tmp_path / "openai_style.pt")
    assert _same_weights(build_clip(TINY_CLIP, str(tmp_path / "openai_style.pt")), source)


def test_torchscript_archive_is_read_like_openai_releases(tmp_path: Path) -> None:
    source = tiny_clip(seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(source.model).save(str(tmp_path / "scripted.pt"))
    assert is_torchscript_archive(tmp_path / "scripted.pt")
    assert _same_weights(build_clip(TINY_CLIP, str(tmp_path / "scripted.pt")), source)


def test_weights_of_another_architecture_are_a_clear_error(tmp_path: Path) -> None:
    torch.save({"visual.proj": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"other\.pt do not fit architecture"):
        build_clip(TINY_CLIP, str(tmp_path / "other.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"cannot read CLIP weights .*junk\.pt"):
        build_clip(TINY_CLIP, str(tmp_path / "junk.pt"))


def test_unknown_architecture_name() -> None:
    with pytest.raises(ConfigError, match="unknown open_clip architecture 'ViT-Q-99'"):
        build_clip("ViT-Q-99", "random")


def test_any_open_clip_architecture_takes_its_own_published_weights_or_tags(tmp_path: Path, monkeypatch) -> None:
    """--clip-model ViT-L-14-quickgelu no longer asks for ViT-B-16.pt: default is its own OpenAI
    release through open_clip, any open_clip tag works, and a placed file is found in the cache."""
    from pseudolabel.core.errors import WeightsError
    from pseudolabel.models.clip_weights import resolve_clip_weights
    from pseudolabel.models.weights import cache_dir

    with pytest.raises(WeightsError, match=r"ViT-L-14-quickgelu openai .*ViT-L-14\.pt elsewhere") as caught:
        resolve_clip_weights("ViT-L-14-quickgelu", "default")
    assert "ViT-B-16" not in str(caught.value)
    with pytest.raises(WeightsError, match=r"ViT-B-16 dfn2b are not in .*apple/DFN2B-CLIP-ViT-B-16"):
        resolve_clip_weights("ViT-B-16", "dfn2b")
    with pytest.raises(
        WeightsError, match=r"'nope' is not a file, a registry name or an open_clip tag of ViT-L-14 \(openai"
    ):
        resolve_clip_weights("ViT-L-14", "nope")
    placed = cache_dir() / "open_clip" / "ViT-L-14.pt"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"weights")
    assert resolve_clip_weights("ViT-L-14-quickgelu", "openai") == placed
    with pytest.raises(WeightsError, match=r"ViT-B-16\.pt"):  # the verified registry file stays B/16's default
        resolve_clip_weights("ViT-B-16-quickgelu", "default")

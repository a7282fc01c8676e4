"""Which file ``--clip-weights`` names for a ``--clip-model``: the verified OpenAI ViT-B/16 from the
weights registry, any pretrained tag open_clip knows for the architecture (fetched through
open_clip's own downloader into the cache), a registry name, or a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip

from pseudolabel.core.errors import WeightsError
from pseudolabel.models.weights import WEIGHTS, cache_dir, offline, resolve_weights

PUBLISHED_WORDS = {"default": "clip_vit_b16_openai", "openai": "clip_vit_b16_openai"}
"""``default`` (every model's word for its published weights) and its older alias ``openai``."""


def open_clip_tags(arch: str | dict[str, Any]) -> list[str]:
    """The pretrained tags open_clip knows for a named architecture (none for a config)."""
    if not isinstance(arch, str) or arch.endswith(".json"):
        return []
    return list(open_clip.list_pretrained_tags_by_model(arch))


def resolve_clip_weights(arch: str | dict[str, Any], weights: str) -> Path | None:
    """The checkpoint file of ``weights`` for ``arch`` (None: random weights).

    ``default``/``openai`` is the registry's verified ViT-B/16 for the ViT-B-16 architectures and
    open_clip's ``openai`` tag for others; another open_clip tag of ``arch`` is fetched by open_clip.

    Raises:
        WeightsError: no such weights for ``arch`` (naming its tags), or they cannot be fetched.
    """
    tags = open_clip_tags(arch)
    if weights in PUBLISHED_WORDS:
        if not isinstance(arch, str) or arch.startswith("ViT-B-16"):
            return resolve_weights(PUBLISHED_WORDS[weights], "clip")
        if "openai" not in tags:
            raise WeightsError(f"{arch} has no OpenAI release: give --clip-weights one of {', '.join(tags)} or a file")
        weights = "openai"
    if weights in tags:
        return fetch_open_clip(arch, weights)
    if tags and weights not in WEIGHTS and weights != "random" and not Path(weights).expanduser().exists():
        raise WeightsError(
            f"--clip-weights {weights!r} is not a file, a registry name or an open_clip tag of {arch} "
            f"({', '.join(tags)})"
        )
    return resolve_weights(weights, "clip")


def fetch_open_clip(arch: str, tag: str) -> Path:
    """open_clip's file for ``arch`` and ``tag`` in ``<cache>/open_clip`` (downloaded once; open_clip
    checks the sha256 its OpenAI URLs carry)."""
    config = open_clip.get_pretrained_cfg(arch, tag)
    folder = cache_dir() / "open_clip"
    source = config.get("url") or config.get("hf_hub") or "?"
    if config.get("url"):
        cached = folder / Path(config["url"]).name
        if cached.is_file():
            return cached
    if offline():
        raise WeightsError(
            f"open_clip weights {arch} {tag} are not in {folder} and downloads are off (PSEUDOLABEL_OFFLINE); "
            f"fetch {source} elsewhere and pass the file with --clip-weights PATH"
        )
    try:
        path = open_clip.download_pretrained(config, prefer_hf_hub=False, cache_dir=str(folder))
    except Exception as error:
        raise WeightsError(f"cannot download open_clip weights {arch} {tag} from {source}: {error}") from error
    if not path:
        raise WeightsError(f"open_clip gives no file for {arch} {tag}")
    return Path(path)

"""Meta's Segment Anything (``segment_anything``): its three image-encoder sizes as ``--sam``
choices, and where their checkpoints come from. Importable without torch; the model is built by
:func:`pseudolabel.models.sam.prompter`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pseudolabel.core.components import Component
from pseudolabel.core.errors import ConfigError
from pseudolabel.models.weights import resolve_weights

SAM_WEIGHTS = {"vit_b": "sam_vit_b", "vit_l": "sam_vit_l", "vit_h": "sam_vit_h"}
"""``--sam`` name -> its registry checkpoint."""
DEFAULT_CHECKPOINT = "default"
"""``--sam-checkpoint default`` means the registry checkpoint of the ``--sam`` variant."""


def family_checkpoint(variant: str, checkpoint: str, registry_names: Mapping[str, str], family: str) -> Path | None:
    """The file of ``checkpoint`` for ``variant`` of a SAM family whose ``--sam`` names map to
    their registry checkpoints in ``registry_names`` (downloaded when missing; None for ``random``).

    Raises:
        ConfigError: a variant not of this family. WeightsError: missing file or another kind's
            checkpoint.
    """
    if variant not in registry_names:
        raise ConfigError(f"--sam must be one of {', '.join(registry_names)} for {family}, got {variant!r}")
    return resolve_weights(registry_names[variant] if checkpoint == DEFAULT_CHECKPOINT else checkpoint, "sam")


def sam_checkpoint(variant: str, checkpoint: str = DEFAULT_CHECKPOINT) -> Path | None:
    """The file of ``checkpoint`` for SAM ``variant`` (see :func:`family_checkpoint`)."""
    return family_checkpoint(variant, checkpoint, SAM_WEIGHTS, "SAM")


def _declare(variant: str, size: str) -> Component:
    return Component(
        "sam", variant, f"SAM {size} (Meta, segment-anything).", "pseudolabel.models.sam:prompter",
        weights="pseudolabel.models.sam_family:sam_checkpoint",
    )  # fmt: skip


SAM_VIT_B = _declare("vit_b", "ViT-B")
SAM_VIT_L = _declare("vit_l", "ViT-L")
SAM_VIT_H = _declare("vit_h", "ViT-H")

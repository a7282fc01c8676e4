"""Meta's Segment Anything (``segment_anything``): its three image-encoder sizes as ``--sam``
choices, and where their checkpoints come from. Importable without torch; the model is built by
:func:`pseudolabel.models.sam.prompter`."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.core.components import Component
from pseudolabel.core.errors import ConfigError
from pseudolabel.models.weights import resolve_weights

SAM_VARIANTS = ("vit_b", "vit_l", "vit_h")
DEFAULT_CHECKPOINT = "default"
"""``--sam-checkpoint default`` means the registry checkpoint of the ``--sam`` variant."""


def sam_checkpoint(variant: str, checkpoint: str = DEFAULT_CHECKPOINT) -> Path | None:
    """The file of ``checkpoint`` for ``variant`` (downloaded when missing; None for ``random``).

    Raises:
        ConfigError: unknown variant. WeightsError: missing file or another kind's checkpoint.
    """
    if variant not in SAM_VARIANTS:
        raise ConfigError(f"--sam must be one of {', '.join(SAM_VARIANTS)}, got {variant!r}")
    return resolve_weights(f"sam_{variant}" if checkpoint == DEFAULT_CHECKPOINT else checkpoint, "sam")


def _declare(variant: str, size: str) -> Component:
    return Component(
        "sam", variant, f"SAM {size} (Meta, segment-anything).", "pseudolabel.models.sam:prompter",
        weights="pseudolabel.models.sam_family:sam_checkpoint",
    )  # fmt: skip


SAM_VIT_B = _declare("vit_b", "ViT-B")
SAM_VIT_L = _declare("vit_l", "ViT-L")
SAM_VIT_H = _declare("vit_h", "ViT-H")

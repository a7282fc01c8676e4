"""SAM 2.1 (Meta, the ``sam2`` package of facebookresearch/sam2): its four image encoders as
``--sam`` choices and where their checkpoints come from. Importable without torch; the model is
built by :func:`pseudolabel.models.sam2_image.prompter`."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.core.components import Component
from pseudolabel.models.sam_family import DEFAULT_CHECKPOINT, family_checkpoint

SAM2_CONFIGS = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
"""``--sam`` name -> the hydra config inside the ``sam2`` package."""
SAM2_WEIGHTS = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny",
    "sam2.1_hiera_s": "sam2.1_hiera_small",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus",
    "sam2.1_hiera_l": "sam2.1_hiera_large",
}
"""``--sam`` name -> its registry checkpoint (Meta's file name without ``.pt``)."""


def sam2_checkpoint(variant: str, checkpoint: str = DEFAULT_CHECKPOINT) -> Path | None:
    """The file of ``checkpoint`` for SAM 2.1 ``variant`` (see :func:`family_checkpoint`)."""
    return family_checkpoint(variant, checkpoint, SAM2_WEIGHTS, "SAM 2.1")


def _declare(variant: str, size: str) -> Component:
    return Component(
        "sam", variant, f"SAM 2.1 Hiera-{size} (Meta, sam2).", "pseudolabel.models.sam2_image:prompter",
        weights="pseudolabel.models.sam2_family:sam2_checkpoint",
    )  # fmt: skip


SAM2_HIERA_T = _declare("sam2.1_hiera_t", "T")
SAM2_HIERA_S = _declare("sam2.1_hiera_s", "S")
SAM2_HIERA_B_PLUS = _declare("sam2.1_hiera_b+", "B+")
SAM2_HIERA_L = _declare("sam2.1_hiera_l", "L")

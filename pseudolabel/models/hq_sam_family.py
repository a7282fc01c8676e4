"""HQ-SAM (SysCV, ``segment-anything-hq``): its four published sizes as ``--sam`` choices, its
``hq_token_only`` choice, and where its checkpoints come from. Importable without torch; the model
is built by :func:`pseudolabel.models.hq_sam.prompter`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pseudolabel.core.components import Component, option
from pseudolabel.models.sam_family import DEFAULT_CHECKPOINT, family_checkpoint

HQ_SAM_VARIANTS = {"hq_vit_b": "vit_b", "hq_vit_l": "vit_l", "hq_vit_h": "vit_h", "hq_vit_tiny": "vit_tiny"}
"""``--sam`` name -> the name in ``segment_anything_hq.sam_model_registry``."""
HQ_SAM_WEIGHTS = {variant: f"sam_hq_{name}" for variant, name in HQ_SAM_VARIANTS.items()}
"""``--sam`` name -> its registry checkpoint."""


@dataclass(frozen=True)
class HqSamOptions:
    """HQ-SAM's choice at prediction time (``SamPredictor.predict(hq_token_only=...)``)."""

    hq_token_only: bool = option(
        False,
        "HQ-SAM: the HQ output token's mask alone (False, the published default: HQ mask added to "
        "SAM's; SysCV suggest True for images of many objects such as COCO).",
    )


def hq_sam_checkpoint(variant: str, checkpoint: str = DEFAULT_CHECKPOINT) -> Path | None:
    """The file of ``checkpoint`` for HQ-SAM ``variant`` (see :func:`family_checkpoint`)."""
    return family_checkpoint(variant, checkpoint, HQ_SAM_WEIGHTS, "HQ-SAM")


def _declare(variant: str, size: str) -> Component:
    return Component(
        "sam", variant, f"HQ-SAM {size} (SysCV, segment-anything-hq).", "pseudolabel.models.hq_sam:prompter",
        options=HqSamOptions, weights="pseudolabel.models.hq_sam_family:hq_sam_checkpoint",
    )  # fmt: skip


HQ_SAM_VIT_B = _declare("hq_vit_b", "ViT-B")
HQ_SAM_VIT_L = _declare("hq_vit_l", "ViT-L")
HQ_SAM_VIT_H = _declare("hq_vit_h", "ViT-H")
HQ_SAM_VIT_TINY = _declare("hq_vit_tiny", "TinyViT (Light HQ-SAM)")

"""Grounding DINO's published sizes (IDEA-Research) as ``--detector`` choices, and where their
checkpoints come from. Importable without torch; the model is built by
:func:`pseudolabel.models.grounding.detector`. ``--detector`` also takes a Grounding DINO
config ``.json`` (tests use tiny ones)."""

from __future__ import annotations

from pseudolabel.core.components import Component


def _declare(variant: str, backbone: str) -> Component:
    return Component(
        "detector", variant, f"Grounding DINO {backbone} (IDEA-Research, transformers).",
        "pseudolabel.models.grounding:detector", models=("grounding",),
        weights="pseudolabel.models.grounding:detector_checkpoint",
    )  # fmt: skip


GROUNDING_DINO_SWINT = _declare("swint", "Swin-T")
GROUNDING_DINO_SWINB = _declare("swinb", "Swin-B")

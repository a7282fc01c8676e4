"""The open-vocabulary detectors ``--detector`` takes: Grounding DINO (IDEA-Research),
MM-Grounding-DINO (OpenMMLab) and OWLv2 (Google) at their published sizes, and where their
checkpoints come from. Importable without torch; the models are built by
:func:`pseudolabel.models.grounding.detector` and :func:`pseudolabel.models.owl.detector`.
``--detector`` also takes a config ``.json`` of any of them (tests use tiny ones)."""

from __future__ import annotations

from pseudolabel.core.components import Component


def _declare(variant: str, summary: str, module: str = "grounding", locator: str = "detector_checkpoint") -> Component:
    return Component(
        "detector", variant, f"{summary}, transformers.", f"pseudolabel.models.{module}:detector",
        models=("grounding",), weights=f"pseudolabel.models.{module}:{locator}",
    )  # fmt: skip


GROUNDING_DINO_SWINT = _declare("swint", "Grounding DINO Swin-T (IDEA-Research)")
GROUNDING_DINO_SWINB = _declare("swinb", "Grounding DINO Swin-B (IDEA-Research)")
MM_GROUNDING_DINO_T = _declare("mm-gdino-t", "MM-Grounding-DINO Swin-T (OpenMMLab)")
MM_GROUNDING_DINO_B = _declare("mm-gdino-b", "MM-Grounding-DINO Swin-B (OpenMMLab)")
OWLV2_B = _declare("owlv2-b", "OWLv2 B/16 ensemble (Google)", "owl", "owl_checkpoint")
OWLV2_L = _declare("owlv2-l", "OWLv2 L/14 ensemble (Google)", "owl", "owl_checkpoint")

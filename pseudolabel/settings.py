"""What a run is built from: which models (ModelSettings), and the labeler's and refiners'
settings in groups. Importable without torch, so the command line reads its defaults here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pseudolabel.core.scoremaps import DEFAULT_LABEL_CONFIDENCE
from pseudolabel.labelers.options import ExclusionOptions, PromptingOptions, ZeroShotOptions

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSettings:
    """Which models a run uses; ``default`` weights are each model's published ones."""

    device: str | torch.device = "cpu"
    autocast_dtype: torch.dtype | None = None
    clip_model: str = "ViT-B-16-quickgelu"
    clip_weights: str = "default"
    sam: str = "vit_b"
    sam_checkpoint: str = "default"
    sam_batch: int = 64
    compile_sam: bool = False
    """``torch.compile`` the SAM family's image encoder (``--compile``)."""
    detector: str = "swint"
    sam3_model: str = "sam3"
    sam3_checkpoint: str = "default"
    detector_weights: str = "default"
    seed: int = 0
    components: dict[str, Any] = field(default_factory=dict)
    """A model component's options by its name (e.g. the ``--sam`` model's)."""


@dataclass(frozen=True)
class LabelerSettings:
    """What every labeler shares (prompting, exclusion, zero-shot), and each labeler's own
    options by name (``components``; a missing one: its defaults)."""

    prompting: PromptingOptions = field(default_factory=PromptingOptions)
    exclusion: ExclusionOptions = field(default_factory=ExclusionOptions)
    zero_shot: ZeroShotOptions = field(default_factory=ZeroShotOptions)
    components: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefinerSettings:
    """What every refiner of a run shares, and each refiner's own options by name.

    Attributes:
        label_confidence: the score a hard label's class gets (input masks, SAM repaints).
        components: refiner name -> its declared options (a missing one: its defaults).
    """

    label_confidence: float = DEFAULT_LABEL_CONFIDENCE
    components: dict[str, Any] = field(default_factory=dict)

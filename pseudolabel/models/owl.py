"""OWLv2 (Google, "Scaling Open-Vocabulary Object Detection") through transformers'
``Owlv2ForObjectDetection``, the reference port of Google's Scenic checkpoints.

Each class name is one text query of one pass: the model scores every image patch's box against
every query (logits [Q, C]). Preprocessing is transformers' ``Owlv2ImageProcessor`` itself (scale
to [0, 1], pad bottom and right to a square, Gaussian anti-aliasing and a bilinear resize to 960 px
for the base model and 1008 px for the large one, CLIP mean and std); the selection rule is its
``post_process_object_detection`` (:func:`pseudolabel.labelers.detection.detect`). Text queries are
tokenised by CLIP's BPE (open_clip's tokenizer, the vocabulary of OWLv2's ``CLIPTokenizer``), 16
tokens, padding 0 masked, so no hub tokenizer files are needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pseudolabel.core.errors import ConfigError
from pseudolabel.models.weights import load_every_parameter, read_state_dict, resolve_weights

if TYPE_CHECKING:
    from pseudolabel.settings import ModelSettings

CONTEXT_LENGTH = 16
DEFAULT_WEIGHTS = "default"


@dataclass(frozen=True)
class OwlSpec:
    """A published OWLv2 size: its transformers configuration and registry checkpoint."""

    config: dict[str, Any]
    registry_name: str


VARIANTS = {
    "owlv2-b": OwlSpec(
        {"text_config": {}, "vision_config": {"image_size": 960, "patch_size": 16}}, "owlv2_base"
    ),
    "owlv2-l": OwlSpec(
        {
            "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
            "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                              "num_attention_heads": 16, "image_size": 1008, "patch_size": 14},
            "projection_dim": 768,
        },
        "owlv2_large",
    ),
}  # fmt: skip
"""``--detector`` name -> google/owlv2-base-patch16-ensemble's and google/owlv2-large-patch14-ensemble's
configurations (the sizes of their ``config.json``)."""


def owl_config(variant: str) -> Any:
    """``Owlv2Config`` of ``owlv2-b`` / ``owlv2-l``, or read from a JSON file (tests use tiny ones).

    Raises:
        ConfigError: neither.
    """
    from transformers import Owlv2Config

    if variant in VARIANTS:
        return Owlv2Config(**VARIANTS[variant].config)
    try:
        values = json.loads(Path(variant).read_text(encoding="utf-8"))
        values.pop("model_type", None)
        return Owlv2Config(**values)
    except Exception as error:  # transformers' config validation raises its own error classes
        raise ConfigError(f"cannot read OWLv2 config {variant}: {str(error).splitlines()[0]}") from error


def owl_checkpoint(variant: str, weights: str) -> Path | None:
    """The file of ``weights`` for ``variant`` (downloaded when missing; None for ``random``).

    Raises:
        ConfigError: ``default`` for a config file. WeightsError: missing file.
    """
    if weights == DEFAULT_WEIGHTS:
        if variant not in VARIANTS:
            raise ConfigError(
                f"--detector {variant} has no published weights: give --detector-weights a file or random"
            )
        weights = VARIANTS[variant].registry_name
    return resolve_weights(weights, "owlv2")


@dataclass
class OwlDetector:
    """A frozen OWLv2 with its preprocessing and tokenizer.

    Attributes:
        model: ``Owlv2ForObjectDetection`` in eval mode.
        processor: ``Owlv2ImageProcessor`` at the model's input size.
        tokenizer: CLIP's BPE tokenizer, 16 tokens.
        autocast_dtype: the precision its passes run in (None: fp32).
    """

    model: Any
    processor: Any
    tokenizer: Any
    autocast_dtype: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pixel_values(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> float [1, 3, R, R], as ``Owlv2ImageProcessor`` prepares it."""
        return self.processor(images=np.ascontiguousarray(rgb), return_tensors="pt")["pixel_values"].to(self.device)

    def text_inputs(self, names: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` [C, 16] of one query per name."""
        ids = self.tokenizer(names).to(self.device)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def detector(name: str, settings: ModelSettings, device: str | torch.device, options: None) -> OwlDetector:
    """The run's registered OWLv2 ``name`` with ``settings.detector_weights``."""
    return build_owl(name, settings.detector_weights, device, settings.autocast_dtype)


def build_owl(
    variant: str = "owlv2-b",
    weights: str = DEFAULT_WEIGHTS,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> OwlDetector:
    """OWLv2 built once per process (see :func:`owl_config`, :func:`owl_checkpoint`).

    Raises:
        ConfigError, WeightsError: as those; WeightsError for weights of another model.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import Owlv2ForObjectDetection, Owlv2ImageProcessor

    config = owl_config(variant)
    path = owl_checkpoint(variant, weights)
    model = Owlv2ForObjectDetection(config)
    if path is not None:
        load_every_parameter(model, read_state_dict(path, "OWLv2 weights"), "OWLv2 checkpoint", path)
    model = model.float().eval().to(device)
    model.requires_grad_(False)
    size = config.vision_config.image_size
    processor = Owlv2ImageProcessor(size={"height": size, "width": size})
    return OwlDetector(model, processor, SimpleTokenizer(context_length=CONTEXT_LENGTH), autocast_dtype)

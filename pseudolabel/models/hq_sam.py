"""HQ-SAM through SysCV's ``segment_anything_hq`` package (the code of SysCV/sam-hq): SAM's
predictor with an HQ output token fed by an early ViT layer's features."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pseudolabel.models.hq_sam_family import HQ_SAM_VARIANTS, HqSamOptions, hq_sam_checkpoint
from pseudolabel.models.sam import SamPrompter, frozen_on
from pseudolabel.models.sam_family import DEFAULT_CHECKPOINT

if TYPE_CHECKING:
    from pseudolabel.settings import ModelSettings


def build_hq_sam(variant: str, checkpoint: str = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu") -> Any:
    """An HQ-SAM model in eval mode with frozen parameters.

    Args:
        variant: ``hq_vit_b``, ``hq_vit_l``, ``hq_vit_h`` or ``hq_vit_tiny``.
        checkpoint: ``default`` (the variant's registry checkpoint), a registry name, a file path
            (SysCV's ``.pth`` state dict) or ``random``.

    Raises:
        ConfigError: unknown variant. WeightsError: missing file or weights of another model.
    """
    path = hq_sam_checkpoint(variant, checkpoint)
    with warnings.catch_warnings():  # its TinyViT re-registers timm's tiny_vit models, warning about each
        warnings.filterwarnings("ignore", "Overwriting tiny_vit", UserWarning)
        from segment_anything_hq import sam_model_registry

    sam = sam_model_registry[HQ_SAM_VARIANTS[variant]](checkpoint=None)
    return frozen_on(sam, path, variant, device, allow_unexpected=True)  # SysCV load with strict=False


def prompter(name: str, settings: ModelSettings, device: str | torch.device, options: HqSamOptions) -> HqSamPrompter:
    """The run's HQ-SAM ``name`` with ``settings.sam_checkpoint``, prompts batched by ``sam_batch``."""
    sam = build_hq_sam(name, settings.sam_checkpoint, device)
    return HqSamPrompter(sam, settings.sam_batch, settings.autocast_dtype, options.hq_token_only)


class HqSamPrompter(SamPrompter):
    """HQ-SAM behind the SAM contract: ``SamPredictor`` and ``SamAutomaticMaskGenerator`` of
    ``segment_anything_hq``; box and point prompts pass ``hq_token_only``. The automatic generator
    is SysCV's, which always decodes with ``hq_token_only=False``."""

    def __init__(
        self, sam: Any, batch: int = 64, autocast_dtype: torch.dtype | None = None, hq_token_only: bool = False
    ) -> None:
        super().__init__(sam, batch, autocast_dtype)
        self.hq_token_only = hq_token_only

    def _make_predictor(self) -> Any:
        from segment_anything_hq import SamPredictor

        return SamPredictor(self.sam)

    def _make_generator(self) -> Any:
        from segment_anything_hq import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(self.sam)

    def _encode_batch(self, images: list[np.ndarray]) -> list[Any]:
        """Per image: (embedding [1, 256, 64, 64], its global-attention blocks' features
        [1, 64, 64, C] each, original size, resized size)."""
        inputs, sizes = self._encoder_inputs(images)
        features, interm = self.sam.image_encoder(inputs)
        features, interm = features.float(), [layer.float() for layer in interm]
        return [(features[i : i + 1], [layer[i : i + 1] for layer in interm], *size) for i, size in enumerate(sizes)]

    def _install(self, embedding: Any) -> None:
        predictor = self.predictor
        predictor.reset_image()
        predictor.features, predictor.interm_features, predictor.original_size, predictor.input_size = embedding
        predictor.is_image_set = True

    def _embed_one(self, rgb: np.ndarray) -> None:
        super()._embed_one(rgb)
        self.predictor.interm_features = [layer.float() for layer in self.predictor.interm_features]

    def _decode_options(self) -> dict[str, Any]:
        return {"hq_token_only": self.hq_token_only}

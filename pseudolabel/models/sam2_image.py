"""SAM 2.1 on single images through Meta's ``sam2`` package: ``SAM2ImagePredictor`` for box and
point prompts, ``SAM2AutomaticMaskGenerator`` for automatic masks, both at their defaults.

The model is built from the package's hydra config with ``build_sam2``'s defaults (including its
dynamic multimask fallback for single points) and no checkpoint; the checkpoint is then loaded here
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pseudolabel.core.errors import ConfigError
from pseudolabel.models.sam import PromptedSegmenter, frozen_on
from pseudolabel.models.sam2_family import SAM2_CONFIGS, sam2_checkpoint
from pseudolabel.models.sam_family import DEFAULT_CHECKPOINT

if TYPE_CHECKING:
    from pseudolabel.settings import ModelSettings

INSTALL_HINT = (
    "--sam {variant} needs Meta's SAM 2 code: pip install --no-build-isolation 'sam2>=1.1' "
    "(set SAM2_BUILD_CUDA=0 where there is no CUDA compiler)"
)


def build_sam2_model(
    variant: str,
    checkpoint: str = DEFAULT_CHECKPOINT,
    device: str | torch.device = "cpu",
    overrides: tuple[str, ...] = (),
) -> Any:
    """A SAM 2.1 model (``SAM2Base``) in eval mode with frozen parameters.

    Args:
        variant: ``sam2.1_hiera_t``, ``_s``, ``_b+`` or ``_l``.
        checkpoint: ``default`` (the variant's registry checkpoint), a registry name, a file path
            (Meta's ``.pt``, a ``{"model": state_dict}``) or ``random``.
        overrides: extra hydra overrides of the config (tests build small models with them).

    Raises:
        ConfigError: unknown variant or no ``sam2`` package. WeightsError: missing file or weights
            of another model.
    """
    path = sam2_checkpoint(variant, checkpoint)
    try:
        from sam2.build_sam import build_sam2
    except ImportError as error:
        raise ConfigError(INSTALL_HINT.format(variant=variant)) from error
    model = build_sam2(SAM2_CONFIGS[variant], None, device="cpu", hydra_overrides_extra=list(overrides))
    return frozen_on(model, path, variant, device)


def prompter(name: str, settings: ModelSettings, device: str | torch.device, options: None) -> Sam2Prompter:
    """The run's SAM 2.1 ``name`` with ``settings.sam_checkpoint``, prompts batched by ``sam_batch``."""
    return Sam2Prompter(
        build_sam2_model(name, settings.sam_checkpoint, device), settings.sam_batch, settings.autocast_dtype
    )


class Sam2Prompter(PromptedSegmenter):
    """SAM 2.1 behind the SAM contract. Images are resized to 1024 x 1024 (SAM 2's transform);
    a batch is encoded with the predictor's ``set_image_batch`` and each image's features are
    then installed as ``set_image`` leaves them. Boxes and points are decoded by the predictor's
    batched path (``_prep_prompts`` + ``_predict``, what its ``predict`` runs) with one mask each."""

    def __init__(self, sam: Any, batch: int = 64, autocast_dtype: torch.dtype | None = None) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        super().__init__(sam, batch, autocast_dtype)
        self.predictor = SAM2ImagePredictor(sam)

    def _make_generator(self) -> Any:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        return SAM2AutomaticMaskGenerator(self.sam)

    def _encode_batch(self, images: list[np.ndarray]) -> list[Any]:
        """Per image: ({"image_embed": [1, 256, 64, 64], "high_res_feats": [[1, 32, 256, 256],
        [1, 64, 128, 128]]}, (height, width))."""
        predictor = self.predictor
        predictor.set_image_batch(images)
        features, sizes = predictor._features, predictor._orig_hw
        predictor.reset_predictor()
        return [
            (
                {
                    "image_embed": features["image_embed"][i : i + 1].float(),
                    "high_res_feats": [level[i : i + 1].float() for level in features["high_res_feats"]],
                },
                sizes[i],
            )
            for i in range(len(images))
        ]

    def _install(self, embedding: Any) -> None:
        predictor = self.predictor
        predictor.reset_predictor()
        features, size = embedding
        predictor._features, predictor._orig_hw, predictor._is_image_set = features, [size], True

    def _embed_one(self, rgb: np.ndarray) -> None:
        predictor = self.predictor
        predictor.set_image(rgb)
        features = predictor._features
        features["image_embed"] = features["image_embed"].float()
        features["high_res_feats"] = [level.float() for level in features["high_res_feats"]]

    def _decode_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predictor = self.predictor
        _, _, _, scaled = predictor._prep_prompts(None, None, boxes, None, normalize_coords=True)
        masks, scores, _ = predictor._predict(None, None, scaled, None, multimask_output=False)
        return masks, scores

    def _decode_points(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predictor = self.predictor
        labels = np.ones((len(points), 1), dtype=np.int64)
        _, scaled, labels, _ = predictor._prep_prompts(points[:, None, :], labels, None, None, normalize_coords=True)
        masks, scores, _ = predictor._predict(scaled, labels, None, None, multimask_output=False)
        return masks, scores

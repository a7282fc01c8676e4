"""Segment Anything through Meta's ``segment_anything`` package; weights from the weights manager;
the SAM contract every SAM family implements (:class:`PromptedSegmenter`).

Checkpoints are read with ``torch.load(weights_only=True)`` (the package's own builders would
unpickle without that guard), so the model is built empty and the state dict loaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pseudolabel.core.errors import WeightsError
from pseudolabel.models.image_encodings import CachedImageEncoder
from pseudolabel.models.sam_family import DEFAULT_CHECKPOINT, sam_checkpoint

if TYPE_CHECKING:
    from pseudolabel.settings import ModelSettings


def build_sam(variant: str = "vit_b", checkpoint: str = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu") -> Any:
    """A SAM model in eval mode with frozen parameters.

    Args:
        variant: ``vit_b``, ``vit_l`` or ``vit_h``.
        checkpoint: ``default`` (the variant's registry checkpoint), a registry name, a file
            path (Meta's ``.pth`` state dict), or ``random``.

    Raises:
        ConfigError: unknown variant. WeightsError: missing file or weights of another variant.
    """
    from segment_anything import sam_model_registry

    path = sam_checkpoint(variant, checkpoint)
    return frozen_on(sam_model_registry[variant](checkpoint=None), path, variant, device)


def prompter(name: str, settings: ModelSettings, device: str | torch.device, options: None) -> SamPrompter:
    """The run's SAM ``name`` with ``settings.sam_checkpoint``, prompts batched by ``sam_batch``."""
    return SamPrompter(build_sam(name, settings.sam_checkpoint, device), settings.sam_batch, settings.autocast_dtype)


def load_sam_state(model: torch.nn.Module, path: Path, variant: str, allow_unexpected: bool = False) -> None:
    """Load the state dict in ``path`` (``torch.load(weights_only=True)``; a ``model`` wrapper,
    as SAM 2 saves it, is unwrapped) into ``model``; every parameter of the model must be there.

    Raises:
        WeightsError: an unreadable file, or weights of another model (missing keys, other
            shapes; unexpected keys too unless ``allow_unexpected``).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or (unexpected and not allow_unexpected):
            raise ValueError(f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}")
    except (RuntimeError, OSError, ValueError, AttributeError) as error:
        first_line = str(error).splitlines()[0]
        raise WeightsError(f"SAM checkpoint {path} does not load into {variant}: {first_line}") from error


def frozen_on(
    model: torch.nn.Module, path: Path | None, variant: str, device: str | torch.device, allow_unexpected: bool = False
) -> Any:
    """``model`` holding the checkpoint at ``path`` (None: its random initialisation, see
    :func:`load_sam_state`), on ``device``, in eval mode, with frozen parameters."""
    if path is not None:
        load_sam_state(model, path, variant, allow_unexpected)
    model = model.to(device).eval()
    model.requires_grad_(False)
    return model


class PromptedSegmenter(CachedImageEncoder):
    """The SAM contract shared by every SAM family: one image embedding per image, box and point
    prompts decoded ``batch`` at a time under autocast, and the family's automatic masks.

    Shared by the Grounded-SAM labeler (box prompts) and the SAM refiner (point prompts, automatic
    masks) of one run: setting the same image array again reuses its embedding, and
    :meth:`embed_batch` encodes several images in one image-encoder pass ahead of their
    ``set_image`` (:class:`~pseudolabel.models.image_encodings.CachedImageEncoder`). A family
    supplies how it encodes a batch, installs one image's embedding in its predictor
    (``_embed_one``: the family predictor's own ``set_image``), decodes prompts and builds its
    automatic mask generator.
    """

    def __init__(self, sam: Any, batch: int = 64, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__(autocast_dtype)
        self.sam = sam
        self.batch = batch
        self._generator: Any = None

    @property
    def device(self) -> torch.device:
        return next(self.sam.parameters()).device

    def compile_image_encoder(self) -> None:
        """``torch.compile`` the family's image encoder in place (its first call per batch size
        compiles; state-dict keys unchanged)."""
        self.sam.image_encoder.compile()

    def predict_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per box: (bool [N, H, W], predicted IoU [N]) for x0, y0, x1, y1 pixel boxes [N, 4]."""
        return self._predict(torch.as_tensor(boxes).float(), self._decode_boxes)

    def predict_points(self, points: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per positive point: (bool [P, H, W], predicted IoU [P]) for (x, y) pixels [P, 2]."""
        return self._predict(torch.as_tensor(points, dtype=torch.float32), self._decode_points)

    def automatic_masks(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The family's automatic mask generator at its published defaults on uint8 [H, W, 3]
        ``rgb``: bool [H, W] masks in the generator's order. It runs in fp32 whatever the
        precision (its post-processing hands tensors to numpy, which takes no bf16)."""
        if self._generator is None:
            self._generator = self._make_generator()
        with torch.no_grad():
            proposals = self._generator.generate(np.ascontiguousarray(rgb))
        return [proposal["segmentation"] for proposal in proposals]

    @torch.no_grad()
    def _predict(self, prompts: torch.Tensor, decode: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``prompts`` [N, ...] ``batch`` at a time, single-mask output."""
        masks, scores = [], []
        for start in range(0, len(prompts), self.batch):
            with self._autocast():
                batch_masks, batch_scores = decode(prompts[start : start + self.batch])
            masks.append(batch_masks[:, 0])
            scores.append(batch_scores[:, 0].float())
        return torch.cat(masks), torch.cat(scores)

    def _decode_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bool masks [n, 1, H, W], IoU [n, 1]) for pixel boxes [n, 4]."""
        raise NotImplementedError

    def _decode_points(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bool masks [n, 1, H, W], IoU [n, 1]) for positive pixel points [n, 2]."""
        raise NotImplementedError

    def _make_generator(self) -> Any:
        """The family's automatic mask generator with its defaults."""
        raise NotImplementedError


class SamPrompter(PromptedSegmenter):
    """Meta's SAM (``segment_anything``): its ``SamPredictor`` and ``SamAutomaticMaskGenerator``."""

    def __init__(self, sam: Any, batch: int = 64, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__(sam, batch, autocast_dtype)
        self.predictor = self._make_predictor()

    def _make_predictor(self) -> Any:
        from segment_anything import SamPredictor

        return SamPredictor(self.sam)

    def _make_generator(self) -> Any:
        from segment_anything import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(self.sam)

    def _encoder_inputs(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[Any, Any]]]:
        """Images resized to 1024 on the longer side, normalised and padded as ``set_image`` does:
        float [B, 3, 1024, 1024] and each image's (original size, resized size)."""
        predictor = self.predictor
        inputs, sizes = [], []
        for rgb in images:
            resized = torch.as_tensor(predictor.transform.apply_image(rgb), device=predictor.device)
            resized = resized.permute(2, 0, 1).contiguous()[None]
            inputs.append(self.sam.preprocess(resized))
            sizes.append((tuple(rgb.shape[:2]), tuple(resized.shape[-2:])))
        return torch.cat(inputs), sizes

    def _encode_batch(self, images: list[np.ndarray]) -> list[Any]:
        inputs, sizes = self._encoder_inputs(images)
        features = self.sam.image_encoder(inputs).float()
        return [(features[i : i + 1], *size) for i, size in enumerate(sizes)]

    def _install(self, embedding: Any) -> None:
        predictor = self.predictor
        predictor.reset_image()
        predictor.features, predictor.original_size, predictor.input_size = embedding
        predictor.is_image_set = True

    def _embed_one(self, rgb: np.ndarray) -> None:
        self.predictor.set_image(rgb, image_format="RGB")
        self.predictor.features = self.predictor.features.float()

    def _decode_options(self) -> dict[str, Any]:
        """Extra keyword arguments of the family's ``predict_torch``."""
        return {}

    def _decode_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predictor = self.predictor
        scaled = predictor.transform.apply_boxes_torch(boxes, predictor.original_size).to(predictor.device)
        masks, scores, _ = predictor.predict_torch(
            None, None, boxes=scaled, multimask_output=False, **self._decode_options()
        )
        return masks, scores

    def _decode_points(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predictor = self.predictor
        scaled = predictor.transform.apply_coords_torch(points[:, None, :], predictor.original_size)
        labels = torch.ones(scaled.shape[:2], dtype=torch.int64, device=predictor.device)
        masks, scores, _ = predictor.predict_torch(
            scaled.to(predictor.device), labels, multimask_output=False, **self._decode_options()
        )
        return masks, scores


def channel_maxima(
    masks: torch.Tensor, confidences: torch.Tensor, channels: torch.Tensor, num_channels: int, empty: float = 0.0
) -> torch.Tensor:
    """Per channel and pixel, the highest confidence among the channel's masks covering the pixel.

    Args:
        masks: bool [N, H, W]; confidences: [N]; channels: int [N] in 0..num_channels-1.
        empty: the value where no mask of a channel covers a pixel.

    Returns:
        float32 [num_channels, H, W].
    """
    height, width = masks.shape[1:]
    scores = torch.full((num_channels, height, width), empty, device=masks.device)
    for channel in channels.unique().tolist():
        chosen = channels == channel
        scores[channel] = torch.where(masks[chosen], confidences[chosen, None, None].float(), empty).amax(dim=0)
    return scores


def merge_by_confidence(
    masks: torch.Tensor, confidences: torch.Tensor, channels: torch.Tensor, num_channels: int
) -> torch.Tensor:
    """Score maps [num_channels, H, W] from masks, so that the most confident mask wins a pixel.

    Args:
        masks: bool [N, H, W]; confidences: [N]; channels: int [N] in 1..num_channels-1.

    Returns:
        channel c > 0: :func:`channel_maxima` (0 where no mask of c covers the pixel); channel 0
        (background): 1 where no mask covers the pixel, else 0.
    """
    scores = channel_maxima(masks, confidences, channels, num_channels)
    scores[0] = (~masks.any(dim=0)).float()
    return scores

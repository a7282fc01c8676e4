"""Segment Anything through Meta's ``segment_anything`` package; weights from the weights manager.

Checkpoints are read with ``torch.load(weights_only=True)`` (the package's own builders would
unpickle without that guard), so the model is built empty and the state dict loaded here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pseudolabel.core.errors import WeightsError
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
    sam = sam_model_registry[variant](checkpoint=None)
    if path is not None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            sam.load_state_dict(state)
        except (RuntimeError, OSError, ValueError) as error:
            first_line = str(error).splitlines()[0]
            raise WeightsError(f"SAM checkpoint {path} does not load into {variant}: {first_line}") from error
    sam = sam.to(device).eval()
    sam.requires_grad_(False)
    return sam


def prompter(name: str, settings: ModelSettings, device: str | torch.device, options: None) -> SamPrompter:
    """The run's SAM ``name`` with ``settings.sam_checkpoint``, prompts batched by ``sam_batch``."""
    return SamPrompter(build_sam(name, settings.sam_checkpoint, device), settings.sam_batch, settings.autocast_dtype)


class SamPrompter:
    """SAM with one image embedding per image and prompts decoded in batches, under autocast.

    Shared by the Grounded-SAM labeler (box prompts) and the SAM refiner (point prompts) of one
    run: setting the same image array again reuses its embedding, and :meth:`embed_batch` encodes
    several images in one image-encoder pass ahead of their ``set_image``.
    """

    def __init__(self, sam: Any, batch: int = 64, autocast_dtype: torch.dtype | None = None) -> None:
        from segment_anything import SamPredictor

        self.sam = sam
        self.predictor = SamPredictor(sam)
        self.batch = batch
        self.autocast_dtype = autocast_dtype
        self._image: np.ndarray | None = None
        self._batch: list[tuple[np.ndarray, torch.Tensor, tuple[int, int], tuple[int, int]]] = []

    def _autocast(self) -> Any:
        device_type = self.predictor.device.type
        return torch.autocast(device_type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    @torch.no_grad()
    def embed_batch(self, images: list[np.ndarray]) -> None:
        """Encode uint8 [H, W, 3] ``images`` in one image-encoder pass (each resized to 1024 on its
        longer side and padded, as ``set_image`` does); ``set_image`` of one of these arrays then
        takes its embedding [1, 256, 64, 64] from here. The previous batch's are dropped."""
        predictor = self.predictor
        self._batch = []
        inputs, sizes = [], []
        for rgb in images:
            resized = predictor.transform.apply_image(np.ascontiguousarray(rgb))
            resized = torch.as_tensor(resized, device=predictor.device).permute(2, 0, 1).contiguous()[None]
            inputs.append(self.sam.preprocess(resized))
            sizes.append((tuple(rgb.shape[:2]), tuple(resized.shape[-2:])))
        if not inputs:
            return
        with self._autocast():
            features = self.sam.image_encoder(torch.cat(inputs)).float()
        self._batch = [(rgb, features[i : i + 1], *sizes[i]) for i, rgb in enumerate(images)]

    @torch.no_grad()
    def set_image(self, rgb: np.ndarray) -> None:
        """Embed uint8 [H, W, 3] ``rgb`` (skipped when it is the array embedded last, taken from
        :meth:`embed_batch` when that encoded it)."""
        if rgb is self._image:
            return
        for array, features, original_size, input_size in self._batch:
            if array is rgb:
                predictor = self.predictor
                predictor.reset_image()
                predictor.features, predictor.original_size, predictor.input_size = features, original_size, input_size
                predictor.is_image_set = True
                self._image = rgb
                return
        with self._autocast():
            self.predictor.set_image(np.ascontiguousarray(rgb), image_format="RGB")
        self.predictor.features = self.predictor.features.float()
        self._image = rgb

    def predict_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per box: (bool [N, H, W], predicted IoU [N]) for x0, y0, x1, y1 pixel boxes [N, 4]."""
        predictor = self.predictor

        def prompt(chunk: torch.Tensor) -> dict[str, Any]:
            scaled = predictor.transform.apply_boxes_torch(chunk.float(), predictor.original_size)
            return {"point_coords": None, "point_labels": None, "boxes": scaled.to(predictor.device)}

        return self._predict(boxes, prompt)

    def predict_points(self, points: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per positive point: (bool [P, H, W], predicted IoU [P]) for (x, y) pixels [P, 2]."""
        predictor = self.predictor

        def prompt(chunk: torch.Tensor) -> dict[str, Any]:
            scaled = predictor.transform.apply_coords_torch(chunk[:, None, :].float(), predictor.original_size)
            labels = torch.ones(scaled.shape[:2], dtype=torch.int64, device=predictor.device)
            return {"point_coords": scaled.to(predictor.device), "point_labels": labels}

        return self._predict(torch.as_tensor(points, dtype=torch.float32), prompt)

    @torch.no_grad()
    def _predict(self, prompts: torch.Tensor, make_prompt: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``prompts`` [N, ...] ``batch`` at a time, single-mask output."""
        masks, scores = [], []
        for start in range(0, len(prompts), self.batch):
            with self._autocast():
                batch_masks, batch_scores, _ = self.predictor.predict_torch(
                    **make_prompt(prompts[start : start + self.batch]), multimask_output=False
                )
            masks.append(batch_masks[:, 0])
            scores.append(batch_scores[:, 0].float())
        return torch.cat(masks), torch.cat(scores)


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

"""SAM 3 concept segmentation (Meta, "Segment Anything with Concepts") on transformers' ``Sam3Model``
modules, run the way Meta's ``Sam3Processor`` runs it.

For one image and a noun phrase SAM 3 returns, per query (200 at real size), a box, a mask and a
score; a presence head says whether the phrase is in the image at all. Meta's processor
(``sam3`` 0.1.4, ``sam3_image_processor.py``), which this follows:

* the image is resized to 1008 x 1008 as uint8 (torchvision ``v2.Resize``, antialiased), scaled to
  [0, 1] and normalised with mean = std = 0.5. Torchvision resizes uint8 on a GPU (and on a CPU
  without AVX2) in float32 and rounds; on an AVX2 CPU its own uint8 kernel rounds differently
  (one grey level in 17% of pixels of the example images). This module always resizes the GPU
  way, so its input is the same on every machine and equal to Meta's on a GPU;
* the phrase is tokenised by CLIP's BPE into 32 tokens (start, the phrase, end, zeros), the zeros
  masked;
* the prompt the detector reads is the text tokens **and** the geometry encoder's class token
  (Meta's model always runs its geometry encoder, with no boxes it yields that one token;
  transformers' ``Sam3Model.forward`` leaves it out for text-only prompts, which changes scores by
  up to 0.1 on random weights, so this module runs the submodules itself);
* score = sigmoid(query logit) x sigmoid(presence logit); a query is kept when its score is above
  0.5; its box (cx, cy, w, h in [0, 1]) becomes pixels; its mask logits are resized bilinearly
  to the image and kept where sigmoid > 0.5.

Several phrases of one image run as one batch (the image features are computed once and shared;
the geometry token too, as it depends on the image only). Checkpoints: transformers' layout
(``model.safetensors`` of ``facebook/sam3``) or Meta's ``sam3.pt`` (converted on load,
:mod:`pseudolabel.models.sam3_convert`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.models.image_encodings import CachedImageEncoder
from pseudolabel.models.sam3_convert import is_meta_checkpoint, meta_to_transformers
from pseudolabel.models.weights import load_every_parameter, read_state_dict, resolve_weights

if TYPE_CHECKING:
    from pseudolabel.settings import ModelSettings

SAM3_MODEL = "sam3"
"""``--sam3-model``'s published model (the only size Meta released)."""
DEFAULT_CHECKPOINT = "default"
"""``--sam3-checkpoint default`` means the registry checkpoint ``sam3``."""
CONTEXT_LENGTH = 32
PIXEL_MEAN = PIXEL_STD = 0.5
SCORE_THRESHOLD = MASK_THRESHOLD = 0.5
"""Meta's ``Sam3Processor`` defaults: ``confidence_threshold`` and the mask's sigmoid cut (the
labeler's options, :class:`~pseudolabel.labelers.options.Sam3Options`, default to the same)."""
PROMPT_BATCH = 8
"""Phrases decoded together (each holds its own copy of the mask decoder's 288 x 288 maps)."""
_UNUSED_KEYS = ("geometry_encoder.points_",)
"""Meta's point-prompt projections: transformers' model takes no point prompts."""


def sam3_config(model: str) -> Any:
    """transformers' ``Sam3Config`` of ``model``: ``sam3`` (the published size) or a config ``.json``.

    Raises:
        ConfigError: neither.
    """
    from transformers import Sam3Config

    if model == SAM3_MODEL:
        return Sam3Config()
    path = Path(model)
    if path.suffix != ".json":
        raise ConfigError(f"--sam3-model must be {SAM3_MODEL} or a Sam3Config .json file, got {model!r}")
    try:
        return Sam3Config(**json.loads(path.read_text()))
    except Exception as error:  # transformers' config validation raises its own error classes
        raise ConfigError(f"cannot read SAM 3 config {path}: {str(error).splitlines()[0]}") from error


def sam3_checkpoint(model: str, checkpoint: str = DEFAULT_CHECKPOINT) -> Path | None:
    """The checkpoint file (downloaded when missing) for ``model``; None for ``random``.

    Raises:
        ConfigError: ``default`` with a config file (whose weights no registry holds).
        WeightsError: a missing file.
    """
    if checkpoint == DEFAULT_CHECKPOINT:
        if model != SAM3_MODEL:
            raise ConfigError(f"--sam3-model {model} has no published weights: give --sam3-checkpoint a file or random")
        checkpoint = "sam3"
    return resolve_weights(checkpoint, "sam3")


def build_sam3(
    model: str = SAM3_MODEL, checkpoint: str = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu"
) -> Any:
    """transformers' ``Sam3Model`` in eval mode with frozen parameters (see :func:`sam3_config`,
    :func:`sam3_checkpoint`).

    Raises:
        ConfigError, WeightsError: as those; WeightsError for a checkpoint of another model.
    """
    from transformers import Sam3Model

    config = sam3_config(model)
    path = sam3_checkpoint(model, checkpoint)
    network = Sam3Model(config)
    if path is not None:
        load_sam3_state(network, path)
    network = network.float().eval().to(device)
    network.requires_grad_(False)
    return network


def load_sam3_state(network: torch.nn.Module, path: Path) -> None:
    """Load a SAM 3 checkpoint (transformers' or Meta's layout) into ``network``; every parameter
    must be there.

    Raises:
        WeightsError: unreadable, or weights of another model.
    """
    state = read_state_dict(path, "SAM 3 checkpoint")
    try:
        if is_meta_checkpoint(state):
            state = meta_to_transformers(state)
    except (RuntimeError, ValueError, IndexError) as error:
        raise WeightsError(f"SAM 3 checkpoint {path} does not load: {str(error).splitlines()[0]}") from error
    state = {key.removeprefix("detector_model."): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith(("tracker_", *_UNUSED_KEYS))}
    load_every_parameter(network, state, "SAM 3 checkpoint", path)


def concept_segmenter(settings: ModelSettings, device: str | torch.device) -> ConceptSegmenter:
    """The run's SAM 3 (``settings.sam3_model`` with ``settings.sam3_checkpoint``)."""
    network = build_sam3(settings.sam3_model, settings.sam3_checkpoint, device)
    return ConceptSegmenter(network, autocast_dtype=settings.autocast_dtype)


@dataclass(frozen=True)
class Concepts:
    """SAM 3's kept instances of one image for P phrases.

    Attributes:
        masks: bool [N, H, W] at image size.
        scores: float [N], query score x presence score.
        prompts: long [N], which phrase each instance answers.
        boxes: float [N, 4], x0, y0, x1, y1 in pixels.
        presence: float [P], the presence score of each phrase (sigmoid).
    """

    masks: torch.Tensor
    scores: torch.Tensor
    prompts: torch.Tensor
    boxes: torch.Tensor
    presence: torch.Tensor


class ConceptSegmenter(CachedImageEncoder):
    """SAM 3 on one image at a time: image features once per image (or per batch of images with
    :meth:`embed_batch`, :class:`~pseudolabel.models.image_encodings.CachedImageEncoder`), phrases'
    text features once per run, ``prompt_batch`` phrases decoded together under autocast."""

    def __init__(
        self, network: Any, prompt_batch: int = PROMPT_BATCH, autocast_dtype: torch.dtype | None = None
    ) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        super().__init__(autocast_dtype)
        self.network = network
        self.prompt_batch = max(1, prompt_batch)
        self.resolution = int(network.config.vision_config.image_size)
        self.tokenizer = SimpleTokenizer(context_length=CONTEXT_LENGTH)
        self._texts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._features: tuple[Any, torch.Tensor, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def pixels(self, rgb: np.ndarray) -> torch.Tensor:
        """Meta's input of uint8 [H, W, 3] ``rgb``: float [3, R, R], R the model's resolution (resized
        as torchvision resizes uint8 on a GPU: in float32, then rounded to whole grey levels)."""
        from torchvision.transforms import v2

        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).to(self.device, torch.float32)
        resized = v2.functional.resize(image, [self.resolution, self.resolution]).round_()
        return (resized / 255 - PIXEL_MEAN) / PIXEL_STD

    def _encode_batch(self, images: list[np.ndarray]) -> list[Any]:
        vision = self.network.vision_encoder(torch.stack([self.pixels(rgb) for rgb in images]))
        return [self._with_geometry(_select(vision, index)) for index in range(len(images))]

    def _install(self, encoding: Any) -> None:
        self._features = encoding

    def _embed_one(self, rgb: np.ndarray) -> None:
        self._features = self._with_geometry(self.network.vision_encoder(self.pixels(rgb)[None]))

    def _with_geometry(self, vision: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The image's vision features and the geometry encoder's output with no boxes (its class
        token, [1, 1, C], and mask [1, 1]): Meta appends that token to every text prompt. Runs
        inside the encoders' autocast."""
        none = torch.zeros(1, 0, device=self.device)
        geometry = self.network.geometry_encoder(
            box_embeddings=torch.zeros(1, 0, 4, device=self.device), box_mask=none.bool(), box_labels=none.long(),
            img_feats=vision.fpn_hidden_states[:-1], img_pos_embeds=vision.fpn_position_encoding[:-1],
        )  # fmt: skip
        return vision, geometry.last_hidden_state, geometry.attention_mask

    @torch.no_grad()
    def text_features(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each phrase's token features [P, 32, C] and valid-token mask bool [P, 32], computed once
        per phrase and kept."""
        new = [name for name in dict.fromkeys(names) if name not in self._texts]
        if new:
            ids = self.tokenizer(new).to(self.device)
            with self._autocast():
                features = self.network.get_text_features(input_ids=ids, attention_mask=(ids != 0).long())
            for name, tokens, valid in zip(new, features.pooler_output, ids != 0, strict=True):
                self._texts[name] = (tokens, valid)
        return (torch.stack([self._texts[name][0] for name in names]),
                torch.stack([self._texts[name][1] for name in names]))  # fmt: skip

    @torch.no_grad()
    def segment(
        self, names: list[str], score_threshold: float = SCORE_THRESHOLD, mask_threshold: float = MASK_THRESHOLD
    ) -> Concepts:
        """The instances of each phrase in ``names`` in the image set last (see :class:`Concepts`)."""
        if self._image is None or self._features is None:
            raise RuntimeError("set_image first")
        height, width = self._image.shape[:2]
        parts = []
        for start in range(0, len(names), self.prompt_batch):
            chunk = names[start : start + self.prompt_batch]
            with self._autocast():
                parts.append(self._decode(chunk))
        logits, boxes, masks, presence = (torch.cat([part[i] for part in parts]).float() for i in range(4))
        scores = logits.sigmoid() * presence.sigmoid()[:, None]  # [P, Q]
        prompt, query = (scores > score_threshold).nonzero(as_tuple=True)
        kept_masks = F.interpolate(masks[prompt, query][:, None], (height, width), mode="bilinear", align_corners=False)
        scale = torch.tensor([width, height, width, height], device=boxes.device, dtype=boxes.dtype)
        return Concepts(
            kept_masks[:, 0].sigmoid() > mask_threshold, scores[prompt, query], prompt,
            boxes[prompt, query] * scale, presence.sigmoid(),
        )  # fmt: skip

    @torch.no_grad()
    def presence(self, names: list[str]) -> torch.Tensor:
        """The presence score (sigmoid) [P] of each phrase in the image set last; the masks are not
        decoded."""
        if self._features is None:
            raise RuntimeError("set_image first")
        scores = []
        for start in range(0, len(names), self.prompt_batch):
            with self._autocast():
                scores.append(self._decode(names[start : start + self.prompt_batch], with_masks=False)[-1])
        return torch.cat(scores).float().sigmoid()

    def _decode(self, names: list[str], with_masks: bool = True) -> tuple[torch.Tensor, ...]:
        """Query logits [p, Q], xyxy boxes in [0, 1] [p, Q, 4], mask logits [p, Q, h, w] (None without
        ``with_masks``) and presence logits [p] of ``names`` (as ``Sam3Model.forward`` with the
        geometry token in the prompt)."""
        from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

        network, count = self.network, len(names)
        vision, geometry, geometry_mask = self._features
        fpn = [level.expand(count, -1, -1, -1) for level in vision.fpn_hidden_states[:-1]]
        positions = [level.expand(count, -1, -1, -1) for level in vision.fpn_position_encoding[:-1]]
        text, text_mask = self.text_features(names)
        prompt = torch.cat([text, geometry.expand(count, -1, -1).to(text.dtype)], dim=1)
        prompt_mask = torch.cat([text_mask, geometry_mask.expand(count, -1).bool()], dim=1)
        encoded = network.detr_encoder(
            vision_features=[fpn[-1]], text_features=prompt, vision_pos_embeds=[positions[-1]], text_mask=prompt_mask
        )
        decoded = network.detr_decoder(
            vision_features=encoded.last_hidden_state, text_features=encoded.text_features,
            vision_pos_encoding=encoded.pos_embeds_flattened, text_mask=prompt_mask,
            spatial_shapes=encoded.spatial_shapes,
        )  # fmt: skip
        presence = decoded.presence_logits[-1][:, 0]
        if not with_masks:
            return None, None, None, presence
        queries = decoded.intermediate_hidden_states[-1]
        offsets = network.detr_decoder.box_head(queries)
        boxes = box_cxcywh_to_xyxy((inverse_sigmoid(decoded.reference_boxes[-1]) + offsets).sigmoid())
        logits = network.dot_product_scoring(
            decoder_hidden_states=queries[None], text_features=encoded.text_features, text_mask=prompt_mask
        )[0, ..., 0]
        masks = network.mask_decoder(
            decoder_queries=queries, backbone_features=fpn, encoder_hidden_states=encoded.last_hidden_state,
            prompt_features=prompt, prompt_mask=prompt_mask,
        ).pred_masks  # fmt: skip
        return logits, boxes, masks, presence


def _select(vision: Any, index: int) -> Any:
    """Image ``index`` of a batch's vision-encoder output, as a batch of one."""
    return type(vision)(
        fpn_hidden_states=tuple(level[index : index + 1] for level in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(level[index : index + 1] for level in vision.fpn_position_encoding),
    )

"""Grounding DINO through ``transformers.GroundingDinoForObjectDetection``.

Why transformers rather than ``groundingdino-py``: it is maintained, runs with transformers 5,
needs no custom CUDA build (multi-scale deformable attention has a pure PyTorch path), and takes
batched input. The checkpoints most users hold are IDEA-Research's original ``.pth`` files;
those are converted on load (``grounding_convert``), so both formats work:

* an original checkpoint (``groundingdino_swint_ogc.pth``, the registry default) or a
  transformers state dict, as ``.pth``/``.pt``/``.bin`` (read with ``weights_only=True``) or
  ``.safetensors``;
* a transformers ``save_pretrained`` folder (``config.json`` + weights; the hub's
  ``IDEA-Research/grounding-dino-tiny`` layout), read with ``local_files_only``.

The text encoder is bert-base-uncased (the default ``BertConfig``); its weights are inside the
checkpoint, and its WordPiece vocabulary (30,522 tokens) ships with this package, so nothing is
fetched from a hub at run time.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.models.grounding_convert import convert_original_state_dict, is_original_checkpoint
from pseudolabel.models.image_encodings import CachedImageEncoder
from pseudolabel.models.weights import read_state_dict, resolve_weights

if TYPE_CHECKING:
    from pseudolabel.settings import ModelSettings

VOCAB_FILE = "bert_base_uncased_vocab.txt.gz"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHORT_SIDE, LONG_SIDE_MAX = 800, 1333
DEFAULT_WEIGHTS = "default"
"""``--detector-weights default`` means the registry checkpoint of the ``--detector`` variant."""
UNUSED_HF_KEYS = (
    "model.backbone.conv_encoder.model.swin.layernorm.weight",
    "model.backbone.conv_encoder.model.swin.layernorm.bias",
)
"""Swin's final norm, which the detector never uses (it reads the per-stage norms); the original
checkpoints do not carry it."""


@dataclass(frozen=True)
class SwinSpec:
    """The Swin backbone of a released Grounding DINO and its registry checkpoint."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    image_size: int
    registry_name: str
    mm: bool = False
    """MM-Grounding-DINO (OpenMMLab's re-trained Grounding DINO) rather than IDEA-Research's."""


SWIN_T, SWIN_B = ((96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 224), (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 384))
VARIANTS = {
    "swint": SwinSpec(*SWIN_T, "gdino_swint"),
    "swinb": SwinSpec(*SWIN_B, "gdino_swinb"),
    "mm-gdino-t": SwinSpec(*SWIN_T, "mm_gdino_t", mm=True),
    "mm-gdino-b": SwinSpec(*SWIN_B, "mm_gdino_b", mm=True),
}
MM_MODEL_TYPE = "mm-grounding-dino"
OWL_MODEL_TYPE = "owlv2"


def config_model_type(variant: str) -> str | None:
    """The ``model_type`` a detector config ``.json`` names (None: not a ``.json``, or none named)."""
    if not variant.endswith(".json"):
        return None
    try:
        return json.loads(Path(variant).read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"cannot read detector config {variant}: {error}") from error


def detector_config(variant: str) -> Any:
    """``GroundingDinoConfig`` of ``swint`` / ``swinb``, ``MMGroundingDinoConfig`` of ``mm-gdino-t`` /
    ``mm-gdino-b``, or either read from a JSON file (``model_type`` ``mm-grounding-dino`` for the
    latter; tests use tiny ones)."""
    from transformers import GroundingDinoConfig, MMGroundingDinoConfig

    if variant.endswith(".json"):
        config_class = MMGroundingDinoConfig if config_model_type(variant) == MM_MODEL_TYPE else GroundingDinoConfig
        try:
            return config_class.from_dict(json.loads(Path(variant).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(f"cannot read detector config {variant}: {error}") from error
    spec = VARIANTS.get(variant)
    if spec is None:
        raise ConfigError(f"--detector must be one of {', '.join(VARIANTS)} or a config .json, got {variant!r}")
    config = MMGroundingDinoConfig() if spec.mm else GroundingDinoConfig()
    backbone = config.backbone_config
    backbone.embed_dim, backbone.depths, backbone.num_heads = spec.embed_dim, list(spec.depths), list(spec.num_heads)
    backbone.window_size, backbone.image_size = spec.window_size, spec.image_size
    return config


@cache
def bert_vocabulary() -> dict[str, int]:
    """The bert-base-uncased WordPiece vocabulary shipped with the package: token -> id."""
    data = resources.files("pseudolabel.models").joinpath(VOCAB_FILE).read_bytes()
    tokens = gzip.decompress(data).decode("utf-8").splitlines()
    return {token: index for index, token in enumerate(tokens)}


def bert_tokenizer(folder: Path | None = None) -> Any:
    """The uncased BERT tokenizer: a folder's own ``vocab.txt`` when it has one, else the shipped one."""
    from transformers import BertTokenizer

    if folder is not None and (folder / "vocab.txt").is_file():
        return BertTokenizer(str(folder / "vocab.txt"))
    return BertTokenizer(vocab=bert_vocabulary())


def load_detector_weights(model: Any, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Load an original or transformers state dict into ``model``; any other mismatch is an error."""
    if is_original_checkpoint(state_dict):
        state_dict = convert_original_state_dict(state_dict)
    else:
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatch
        detail = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
        raise WeightsError(f"Grounding DINO weights {path} do not fit the --detector model: {detail}") from error
    missing = [key for key in result.missing_keys if key not in UNUSED_HF_KEYS]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"Grounding DINO weights {path} do not fit the --detector model: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})"
        )


@dataclass(frozen=True)
class ImageFeatures:
    """One image's detector input and what the image backbone (Swin and its position embedding)
    made of it: the text-independent part of a detector pass.

    Attributes:
        pixels: normalised float [1, 3, h, w] at the detector's input size.
        levels: per backbone level, (feature map [1, C_l, h_l, w_l], valid mask bool [1, h_l, w_l]).
        positions: per level, the position embedding [1, D, h_l, w_l].
    """

    pixels: torch.Tensor
    levels: list[tuple[torch.Tensor, torch.Tensor]]
    positions: list[torch.Tensor]


class GroundingDino(CachedImageEncoder):
    """A frozen Grounding DINO (IDEA-Research's or OpenMMLab's) with its tokenizer and input size.

    The image backbone runs once per image (:meth:`set_image`), or once per batch of images
    (:meth:`embed_batch`: images of equal input size as one forward, no padding, so a batch gives
    the outputs of one image at a time); :meth:`detect_pass` then runs the text-dependent rest for
    any number of captions of that image (per-class captions and POLE's second pass reuse it).

    Attributes:
        model: ``GroundingDinoForObjectDetection`` or ``MMGroundingDinoForObjectDetection`` in eval mode.
        tokenizer: uncased BERT WordPiece tokenizer.
        size_rule: (height, width) -> the detector's input size.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        size_rule: Callable[[int, int], tuple[int, int]],
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(autocast_dtype)
        self.model = model
        self.tokenizer = tokenizer
        self.size_rule = size_rule
        self._features: ImageFeatures | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def detect_pass(self, rgb: np.ndarray, text: dict[str, torch.Tensor]) -> Any:
        """The model's outputs (``logits`` [1, Q, T], ``pred_boxes`` [1, Q, 4]) for uint8 [H, W, 3]
        ``rgb`` and one tokenised caption, the image's backbone features taken from
        :meth:`set_image` / :meth:`embed_batch`."""
        self.set_image(rgb)
        features = self._features
        inputs = {key: value.to(self.device) for key, value in text.items()}
        mask = torch.ones_like(features.pixels[:, 0], dtype=torch.long)
        with _backbone_features(self.model.model, features), self._autocast():
            return self.model(pixel_values=features.pixels, pixel_mask=mask, **inputs)

    def _encode_batch(self, images: list[np.ndarray]) -> list[ImageFeatures]:
        pixels = [self.pixel_values(rgb) for rgb in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(pixels):
            groups.setdefault(tuple(tensor.shape), []).append(index)
        encoded: dict[int, ImageFeatures] = {}
        backbone = self.model.model.backbone
        for members in groups.values():
            batch = torch.cat([pixels[index] for index in members])
            levels, positions = backbone(batch, torch.ones_like(batch[:, 0], dtype=torch.long))
            for row, index in enumerate(members):
                own = slice(row, row + 1)
                encoded[index] = ImageFeatures(
                    pixels[index], [(level[own], mask[own]) for level, mask in levels], [pos[own] for pos in positions]
                )
        return [encoded[index] for index in range(len(images))]

    def _install(self, encoding: Any) -> None:
        self._features = encoding

    def _embed_one(self, rgb: np.ndarray) -> None:
        self._features = self._encode_batch([rgb])[0]

    def pixel_values(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> normalised float [1, 3, h, w] at ``size_rule``'s size (:func:`input_size`
        for Grounding DINO, :func:`mmdet_input_size` for MM-Grounding-DINO), resized as both
        publishers' pipelines do: PIL bilinear on the uint8 image, then /255."""
        height, width = self.size_rule(*rgb.shape[:2])
        resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), Image.Resampling.BILINEAR)
        image = torch.from_numpy(np.array(resized)).to(self.device).permute(2, 0, 1)[None].float() / 255
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return (image - mean) / std


class _StoredBackbone(torch.nn.Module):
    """Stands in for a detector's image backbone: returns one image's stored :class:`ImageFeatures`
    (fresh lists each call: the detector appends its extra level to them) and keeps the real
    position embedding, which the detector also calls for that extra level."""

    def __init__(self, features: ImageFeatures, position_embedding: torch.nn.Module) -> None:
        super().__init__()
        self.features = features
        self.position_embedding = position_embedding

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[list, list]:
        return list(self.features.levels), list(self.features.positions)


@contextmanager
def _backbone_features(detector_model: torch.nn.Module, features: ImageFeatures) -> Iterator[None]:
    """Within this block ``detector_model`` (a ``GroundingDinoModel`` or ``MMGroundingDinoModel``)
    reads ``features`` instead of running its backbone."""
    backbone = detector_model.backbone
    detector_model.backbone = _StoredBackbone(features, backbone.position_embedding)
    try:
        yield
    finally:
        detector_model.backbone = backbone


def input_size(height: int, width: int) -> tuple[int, int]:
    """The detector's input (height, width) in pixels: DETR's ``RandomResize([800], max_size=1333)``
    rule as groundingdino-py applies it, the longer side truncated with ``int()`` (451x300 ->
    1202x800, not 1203)."""
    size = SHORT_SIDE
    shorter, longer = float(min(height, width)), float(max(height, width))
    if longer / shorter * size > LONG_SIDE_MAX:
        size = round(LONG_SIDE_MAX * shorter / longer)
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def mmdet_input_size(height: int, width: int) -> tuple[int, int]:
    """MM-Grounding-DINO's input (height, width): mmdet's ``FixScaleResize(scale=(800, 1333),
    keep_ratio=True, backend='pillow')``, one scale factor (the smaller of 800 / shorter side and
    1333 / longer side) and each side rounded (``int(side * factor + 0.5)``), where
    :func:`input_size` truncates the longer side."""
    factor = min(LONG_SIDE_MAX / max(height, width), SHORT_SIDE / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def detector_checkpoint(variant: str, weights: str) -> Path | None:
    """The file or transformers folder of ``weights`` for ``variant`` (downloaded when missing;
    None for ``random``); an OWLv2 config file's as :func:`pseudolabel.models.owl.owl_checkpoint`.

    Raises:
        ConfigError: ``default`` for a variant without published weights. WeightsError: missing file.
    """
    if config_model_type(variant) == OWL_MODEL_TYPE:
        from pseudolabel.models.owl import owl_checkpoint

        return owl_checkpoint(variant, weights)
    name = weights
    if weights == DEFAULT_WEIGHTS:
        if variant not in VARIANTS:
            raise ConfigError(
                f"--detector-weights default needs a published --detector ({', '.join(VARIANTS)}); give a file "
                "or 'random'"
            )
        name = VARIANTS[variant].registry_name
    return resolve_weights(name, "grounding-dino", allow_directory=True)


def detector(name: str, settings: ModelSettings, device: str | torch.device, options: None) -> GroundingDino:
    """The run's registered Grounding DINO or MM-Grounding-DINO ``name`` with ``settings.detector_weights``."""
    return build_grounding_dino(name, settings.detector_weights, device, settings.autocast_dtype)


def build_detector(
    variant: str, weights: str, device: str | torch.device = "cpu", autocast_dtype: torch.dtype | None = None
) -> Any:
    """The detector a config ``.json`` or a published name describes: OWLv2 (``model_type``
    ``owlv2``, :func:`pseudolabel.models.owl.build_owl`), else Grounding DINO or MM-Grounding-DINO."""
    from pseudolabel.models.owl import VARIANTS as OWL_VARIANTS
    from pseudolabel.models.owl import build_owl

    if variant in OWL_VARIANTS or config_model_type(variant) == OWL_MODEL_TYPE:
        return build_owl(variant, weights, device, autocast_dtype)
    return build_grounding_dino(variant, weights, device, autocast_dtype)


def build_grounding_dino(
    variant: str = "swint",
    weights: str = DEFAULT_WEIGHTS,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> GroundingDino:
    """Create Grounding DINO once per process.

    Args:
        variant: ``swint``, ``swinb``, ``mm-gdino-t``, ``mm-gdino-b`` or a config JSON file.
        weights: ``default`` (the variant's registry checkpoint), a registry name, a checkpoint
            file (original or transformers layout), a transformers model folder, or ``random``.
        autocast_dtype: the precision its passes run in (None: fp32).

    Raises:
        ConfigError: unknown variant. WeightsError: missing file, or weights of another model.
    """
    from transformers import GroundingDinoForObjectDetection, MMGroundingDinoConfig, MMGroundingDinoForObjectDetection

    config = detector_config(variant)
    mm = isinstance(config, MMGroundingDinoConfig)
    model_class = MMGroundingDinoForObjectDetection if mm else GroundingDinoForObjectDetection
    path = detector_checkpoint(variant, weights)
    if path is not None and path.is_dir():
        try:
            model = model_class.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as error:
            raise WeightsError(f"cannot load Grounding DINO folder {path}: {str(error).splitlines()[0]}") from error
    else:
        model = model_class(config)
        if path is not None:
            load_detector_weights(model, read_state_dict(path, "Grounding DINO weights"), path)
    model = model.float().eval().to(device)
    model.requires_grad_(False)
    tokenizer = bert_tokenizer(path if path is not None and path.is_dir() else None)
    if len(tokenizer) != model.config.text_config.vocab_size:
        raise WeightsError(
            f"the BERT vocabulary has {len(tokenizer)} tokens but the detector's text encoder expects "
            f"{model.config.text_config.vocab_size}"
        )
    return GroundingDino(model, tokenizer, mmdet_input_size if mm else input_size, autocast_dtype)

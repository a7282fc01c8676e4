"""CLIP through open_clip: building the model from the weights manager, text embeddings, and the
token-level pieces of the ViT that CLIP-ES style CAMs need (positional-embedding interpolation,
a block forward that also returns attention maps, patch-token pooling).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.models.clip_weights import resolve_clip_weights

DEFAULT_ARCH = "ViT-B-16-quickgelu"
"""OpenAI's CLIP was trained with QuickGELU; open_clip's plain ``ViT-B-16`` uses GELU."""
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
"""OpenAI's metadata entries, and the text mask buffer a TorchScript archive carries."""


@dataclass
class ClipModel:
    """A frozen CLIP model with its tokenizer and cached text embeddings.

    Attributes:
        model: open_clip ``CLIP`` in eval mode; parameters do not require gradients.
        mean, std: per-channel normalisation of [0, 1] RGB input.
        patch_size: ViT patch size in pixels.
    """

    model: Any
    tokenizer: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int
    _text_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def input_size(self) -> int:
        """Side in pixels of the square input the image tower was trained at (224 for ViT-B/16)."""
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def image_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> float32 [1, 3, H, W] in [0, 1] on the model's device."""
        return torch.as_tensor(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1)[None].float() / 255

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings [T, D] (float32), computed once per distinct text.

        Each text is encoded alone (as CLIP-ES's ``zeroshot_classifier`` does): a batch's
        make-up changes the embeddings in the last float bits, and the softmax-gradient CAM
        amplifies that, so an embedding must not depend on which texts were asked for with it.
        """
        for text in dict.fromkeys(texts):
            if text not in self._text_cache:
                tokens = self.tokenizer([text]).to(self.device)
                self._text_cache[text] = F.normalize(self.model.encode_text(tokens).float(), dim=-1)[0]
        return torch.stack([self._text_cache[text] for text in texts])

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [B, D] of normalised images [B, 3, S, S] at the model's size."""
        return F.normalize(self.model.encode_image(images).float(), dim=-1)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """Normalise [B, 3, H, W] RGB in [0, 1] with CLIP's mean and std."""
        mean = torch.tensor(self.mean, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        return (rgb - mean) / std


def build_clip(
    arch: str | dict[str, Any] = DEFAULT_ARCH, weights: str = "default", device: str | torch.device = "cpu"
) -> ClipModel:
    """Create CLIP once per process.

    Args:
        arch: open_clip model name (``ViT-B-16-quickgelu``), or an open_clip config (a dict or
            a ``.json`` file with ``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``).
        weights: ``default`` or ``openai`` (OpenAI's release: the registry's ViT-B/16, else open_clip's
            ``openai`` tag), another open_clip pretrained tag of ``arch``, a file path (an open_clip
            state dict, an OpenAI-format state dict, or OpenAI's TorchScript archive), or
            ``random``.

    Raises:
        WeightsError: missing file, or weights that do not fit the architecture.
    """
    path = resolve_clip_weights(arch, weights)
    state_dict = read_clip_state_dict(path) if path is not None else None
    return create_clip(arch, state_dict, device, source=str(path))


def create_clip(
    arch: str | dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None,
    device: str | torch.device = "cpu",
    source: str = "the weights",
) -> ClipModel:
    """A frozen :class:`ClipModel` of ``arch`` holding ``state_dict`` (random weights when None).

    Raises:
        ConfigError: unknown architecture. WeightsError: ``state_dict`` (read from ``source``)
        does not fit.
    """
    if isinstance(arch, str) and arch.endswith(".json"):
        arch = read_json_config(Path(arch))
    config = dict(arch) if isinstance(arch, dict) else open_clip.get_model_config(arch)
    if config is None:
        raise ConfigError(f"unknown open_clip architecture {arch!r} (e.g. ViT-B-16-quickgelu)")
    model = open_clip.model.CLIP(config.pop("embed_dim"), config.pop("vision_cfg"), config.pop("text_cfg"), **config)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            first_line = str(error).splitlines()[0]
            name = arch if isinstance(arch, str) else "the given config"
            raise WeightsError(f"CLIP weights {source} do not fit architecture {name}: {first_line}") from error
    model = model.float().eval().to(device)
    model.requires_grad_(False)
    visual = model.visual
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    patch = visual.conv1.kernel_size[0]
    tokenizer = open_clip.get_tokenizer(arch if isinstance(arch, str) else "ViT-B-16")
    return ClipModel(model, tokenizer, mean, std, patch)


def read_json_config(path: Path) -> dict[str, Any]:
    """An open_clip model config from a JSON file (``model_cfg`` inside it, or the whole file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read CLIP config {path}: {error}") from error
    return dict(data.get("model_cfg", data))


def read_clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read CLIP weights from OpenAI's TorchScript archive or a (possibly wrapped) state dict.

    State dicts load with ``weights_only=True``; entries that are not weights are dropped.
    """
    if is_torchscript_archive(path):
        # OpenAI ships ViT-B-16.pt as TorchScript; its checksum is verified on download.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; OpenAI still ships it
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise WeightsError(f"cannot read CLIP weights {path}: {str(error).splitlines()[0]}") from error
        state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
        if not isinstance(state_dict, dict):
            raise WeightsError(f"CLIP weights {path} hold no state dict")
    cleaned = {key.removeprefix("module."): value for key, value in state_dict.items()}
    for key in NON_WEIGHT_KEYS:
        cleaned.pop(key, None)
    return {key: value.float() for key, value in cleaned.items()}


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (it holds ``constants.pkl`` and ``code/``), False for torch.save files."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def patch_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Embed images of any size whose sides are multiples of the patch size.

    The patch positional embeddings are resized bilinearly (align_corners false) from the
    training grid to the image's grid, as CLIP-ES's ``upsample_pos_emb`` does; the class token
    keeps its own.

    Args:
        images: normalised [B, 3, H, W].

    Returns:
        tokens [B, 1 + (H/p)(W/p), C] after ``ln_pre``, class token first.
    """
    x = visual.conv1(images)
    batch, width, grid_h, grid_w = x.shape
    x = x.reshape(batch, width, grid_h * grid_w).permute(0, 2, 1)
    position = visual.positional_embedding.to(x.dtype)
    trained = round((position.shape[0] - 1) ** 0.5)
    patch_position = position[1:]
    if (grid_h, grid_w) != (trained, trained):
        grid = patch_position.reshape(1, trained, trained, width).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        patch_position = grid.permute(0, 2, 3, 1).reshape(grid_h * grid_w, width)
    class_token = (visual.class_embedding.to(x.dtype) + position[0]).expand(batch, 1, width)
    x = torch.cat([class_token, x + patch_position], dim=1)
    return visual.ln_pre(x)


Linear = tuple[torch.Tensor, torch.Tensor | None]
"""A linear layer's weight [out, in] (plain, or packed for oneDNN) and bias [out]: :func:`linear`."""


QUICK_GELU_SLOPE = 1.702
"""open_clip's ``QuickGELU`` is x * sigmoid(1.702 x), that is silu(1.702 x) / 1.702."""


@dataclass(frozen=True)
class BlockWeights:
    """The linear layers of one open_clip ``ResidualAttentionBlock`` in one compute dtype, and the
    MLP's nonlinearity between ``fc`` and ``proj``; :func:`linear` applies a layer.

    Under bf16 autocast ``F.linear`` casts a float32 weight on every call (autocast caches the
    casts only of weights that require grad, and a frozen model's do not): 48 casts of 85M
    weights per ViT-B/16 image view. Weights cast once (:func:`block_weights` with the autocast
    dtype) leave autocast only the activations to cast, with the same bf16 operands and results;
    a bf16 CAM image ran 1.09x faster for it on a 2-core Sapphire Rapids Xeon.
    """

    in_proj: Linear
    out_proj: Linear
    fc: Linear
    proj: Linear
    activation: Callable[[torch.Tensor], torch.Tensor]


PACKED_ROWS = 1024
"""The row count oneDNN lays a packed weight out for; any count of rows runs with it (on a 2-core
Xeon, weights packed for 256, 769 or 2048 rows ran within noise of each other at 300, 769 and 1538
rows; packed for 1 row, 1538 rows took 1.13x as long)."""


def can_pack_bf16_weights(device: torch.device) -> bool:
    """True where oneDNN can hold bf16 linear weights in its own blocked layout: a CPU whose bf16
    support PyTorch's oneDNN reports, with the (private) packing ops PyTorch's inductor uses."""
    mkldnn = torch.ops.mkldnn
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(mkldnn, "_reorder_linear_weight")
        and hasattr(mkldnn, "_linear_pointwise")
        and bool(mkldnn._is_mkldnn_bf16_supported())
    )


def linear(x: torch.Tensor, layer: Linear) -> torch.Tensor:
    """``F.linear`` of x [..., in] with ``layer``'s weight [out, in] and bias [out]; a weight packed
    by :func:`block_weights` (``packed=True``, no autograd) takes x in bf16 and gives [..., out] bf16,
    the products autocast's bf16 ``F.linear`` computes, without re-laying the weight out per call."""
    weight, bias = layer
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x.to(weight.dtype), weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def block_weights(block: nn.Module, dtype: torch.dtype | None = None, packed: bool = False) -> BlockWeights:
    """``block``'s attention projections and MLP layers, detached, cast to ``dtype`` (None: as stored).

    A QuickGELU MLP (OpenAI's CLIP) is folded into SiLU: ``fc`` scaled by 1.702 and ``proj``'s
    weight by 1 / 1.702, so proj(silu(1.702 fc(x)) / 1.702) = proj(quick_gelu(fc(x))) with one fused
    pass over the [L, 4C] hidden layer instead of QuickGELU's three (ViT-B/16's blocks 1-11 ran
    1.06x faster for it in fp32 on a 2-core Xeon; outputs within 3e-6 of the module's). Those two
    layers are then copies (226 MB for ViT-B/16 in float32); the others are the parameters
    themselves unless cast.

    ``packed`` (bf16 only, where :func:`can_pack_bf16_weights`; no gradients through them): the
    weights in oneDNN's blocked layout, which bf16 ``F.linear`` otherwise builds from the plain
    weight on every call; blocks 1-11 of ViT-B/16 ran 1.05-1.13x faster for it in bf16 on a
    2-core Sapphire Rapids Xeon (paired runs), with the same outputs there.
    """
    if packed and dtype != torch.bfloat16:
        raise ValueError("packed weights are bf16 only")

    def cast(tensor: torch.Tensor | None, factor: float = 1.0) -> torch.Tensor | None:
        if tensor is None:
            return None
        tensor = tensor.detach() if factor == 1.0 else tensor.detach() * factor
        return tensor if dtype is None else tensor.to(dtype)

    def cast_weight(tensor: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
        weight = cast(tensor, factor)
        return torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_ROWS) if packed else weight

    attention, mlp = block.attn, block.mlp
    fold = QUICK_GELU_SLOPE if isinstance(mlp.gelu, open_clip.transformer.QuickGELU) else 1.0
    return BlockWeights(
        in_proj=(cast_weight(attention.in_proj_weight), cast(attention.in_proj_bias)),
        out_proj=(cast_weight(attention.out_proj.weight), cast(attention.out_proj.bias)),
        fc=(cast_weight(mlp.c_fc.weight, fold), cast(mlp.c_fc.bias, fold)),
        proj=(cast_weight(mlp.c_proj.weight, 1 / fold), cast(mlp.c_proj.bias)),
        activation=_silu if fold != 1.0 else mlp.gelu,
    )


def _silu(hidden: torch.Tensor) -> torch.Tensor:
    """SiLU, in place unless autograd records ``hidden`` (the MLP's hidden layer is a temporary)."""
    return F.silu(hidden, inplace=not hidden.requires_grad)


def block_forward(
    block: nn.Module,
    x: torch.Tensor,
    need_attention: bool = False,
    weights: BlockWeights | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One open_clip ``ResidualAttentionBlock`` on batch-first tokens, optionally with attention maps.

    Args:
        x: tokens [B, L, C].
        need_attention: also return the softmax attention averaged over heads.
        weights: ``block``'s linear layers cast for the compute dtype (default: as stored).

    Returns:
        (tokens [B, L, C], attention [B, L, L] or None).
    """
    weights = weights or block_weights(block)
    query, key, value = attention_heads(block, block.ln_1(x), weights)
    if need_attention:
        # one view at a time: a batch's [B, heads, L, L] weights outgrow the CPU's caches (4 views of
        # 745 tokens took 25 % longer per view than one at a time on a 2-core EPYC)
        rows = [
            attention_with_weights(query[i : i + 1], key[i : i + 1], value[i : i + 1], per_head=False)[:2]
            for i in range(len(x))
        ]
        mixed, attention = rows[0] if len(rows) == 1 else (torch.cat(parts) for parts in zip(*rows, strict=True))
    else:
        mixed = F.scaled_dot_product_attention(query, key, value)
        attention = None
    return block_tail(block, x, mixed, weights), attention


def attention_heads(
    block: nn.Module, normed: torch.Tensor, weights: BlockWeights
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key and value [B, heads, L, C / heads] of ``block``'s attention from ``ln_1`` output
    [B, L, C] (head h of query/key/value is row block (0/1/2, h) of the in-projection)."""
    batch, length, width = normed.shape
    heads = block.attn.num_heads
    qkv = linear(normed, weights.in_proj)
    query, key, value = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    return query, key, value


ATTENTION_QUERY_ROWS = 128
"""Queries per step of :func:`attention_with_weights`: 128 rows of ViT-B/16's 12 heads at 769 tokens
are 4.7 MB of float32 weights, where all 769 rows (28 MB) outgrew a 2-core Xeon's caches between
the softmax and the product with the values (one block's attention with head-mean weights took
27 ms in 128-row steps against 53 ms at once)."""


def attention_with_weights(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, per_head: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Softmax attention of [B, heads, L, d] query, key and value, :data:`ATTENTION_QUERY_ROWS`
    queries at a time; each step's weights are averaged over heads (and with ``per_head`` copied
    out) while they are still in the caches.

    Returns:
        (mixed values [B, heads, L, d] (a view of token-major [B, L, heads, d]), weights averaged
        over heads [B, L, L] float32, and with ``per_head`` the weights [B, heads, L, L] with a row
        per query, else None).
    """
    batch, heads, length, _ = query.shape
    # contiguous once: the batched products would copy strided operands (views of the in-projection's
    # output) at every step; 1.2-1.3x faster in fp32 and bf16 on a 2-core Xeon
    scaled = (query * query.shape[-1] ** -0.5).contiguous()
    keys, value = key.transpose(-2, -1).contiguous(), value.contiguous()
    head_mean = query.new_empty(batch, length, length, dtype=torch.float32)
    every_head = None
    # token-major [B, L, heads, d], the layout the out-projection reads, so that needs no copy
    mixed = value.new_empty(batch, length, heads, value.shape[-1])
    for start in range(0, length, ATTENTION_QUERY_ROWS):
        rows = slice(start, start + ATTENTION_QUERY_ROWS)
        weights = torch.softmax(scaled[..., rows, :] @ keys, dim=-1)
        mixed[:, rows] = (weights @ value).transpose(1, 2)
        # the head mean summed in float32 (a bf16 mean converts to float32 and back, and rounds)
        torch.sum(weights.detach(), dim=1, dtype=torch.float32, out=head_mean[:, rows])
        if per_head:
            if every_head is None:  # in the softmax's dtype (autocast chooses it)
                every_head = weights.new_empty(batch, heads, length, length)
            # written here, not concatenated after the loop: one copy of the [B, heads, L, L] weights
            # from the caches, where a concatenation read them back from memory (the last block's
            # attention 1.15x faster on a 2-core Xeon)
            every_head[:, :, rows] = weights
    return mixed.transpose(1, 2), head_mean.div_(heads), every_head


def block_tail(block: nn.Module, x: torch.Tensor, mixed: torch.Tensor, weights: BlockWeights) -> torch.Tensor:
    """The rest of ``block`` after attention: out-projection of the heads' mixed values
    [B, heads, L, d] added to the input tokens ``x`` [B, L, C], then the MLP residual; tokens [B, L, C]."""
    batch, length, width = x.shape
    mixed = linear(mixed.transpose(1, 2).reshape(batch, length, width), weights.out_proj)
    x = x + block.ls_1(mixed)
    hidden = weights.activation(linear(block.ln_2(x), weights.fc))
    return x + block.ls_2(linear(hidden, weights.proj))


def pooled_patch_features(visual: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP-ES image feature: ``ln_post`` on each patch token, mean over patches, then ``proj``.

    Args:
        tokens: final tokens [B, L, C], class token first.

    Returns:
        features [B, D] (not normalised).
    """
    pooled = visual.ln_post(tokens[:, 1:]).mean(dim=1)
    return pooled @ visual.proj if visual.proj is not None else pooled

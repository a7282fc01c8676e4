"""CLIP-ES class activation maps from CLIP ViT (training-free), with class-aware attention affinity.

Per image view (scale, flip): the uint8 image is resized with PIL's bicubic filter to a
multiple of the patch size without cropping; the first L-1 blocks run without gradients and
record attention; GradCAM is taken, as CLIP-ES hooks pytorch-grad-cam on
``resblocks[-1].ln_1``, at the OUTPUT of the last block's first LayerNorm (activations A =
ln_1(x) of the patch tokens, gradients dP_k/dA, which reach A only through the attention
branch), for all classes from one forward of the last block (one backward per class); each
class map is refined with the class-aware attention affinity (CAA) inside boxes found by
CLIP-ES's ``scoremap2bbox`` rule, min-max scaled on the patch grid and resized bilinearly to
the image. Views are averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pseudolabel.labelers.options import CamOptions
from pseudolabel.models.clip import (
    BlockWeights,
    ClipModel,
    attention_heads,
    attention_with_weights,
    block_forward,
    block_tail,
    block_weights,
    can_pack_bf16_weights,
    patch_tokens,
    pooled_patch_features,
)
from pseudolabel.models.image_encodings import CachedImageEncoder

EPSILON = 1e-7


@dataclass
class View:
    """One encoded view: last-block input tokens and the summed attention of the earlier window blocks."""

    tokens: torch.Tensor
    attention_sum: torch.Tensor
    attention_count: int
    grid: tuple[int, int]
    flipped: bool


def min_max(values: torch.Tensor) -> torch.Tensor:
    """Scale each row of [K, ...] to [0, 1] (subtract min, divide by max + 1e-7)."""
    flat = values.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / (flat.max(dim=1, keepdim=True).values + EPSILON)
    return flat.view_as(values)


def gradcam_last_block(
    clip: ClipModel,
    tokens: torch.Tensor,
    text_features: torch.Tensor,
    num_classes: int,
    weights: BlockWeights | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GradCAM of every target class at the last block's ``ln_1`` output: one forward of the last
    block, then one backward per class from the target to the attention's mixed values.

    The target of class k is its softmax probability over all texts (the image's classes and
    the background words): softmax is what makes the classes compete. The activations are
    A = ln_1(tokens) of the patch tokens; the residual ``tokens + attn(A)`` bypasses A, so the
    gradient reaches A through the attention branch only (CLIP-ES's target layer). GradCAM keeps
    only the gradient's mean over the patch tokens, and A enters the attention linearly (q, k, v =
    A W_in^T), so that mean is the patch mean of the q, k, v gradients times W_in; those means
    follow from the gradient at the mixed values (:func:`patch_mean_qkv_gradient`) without the
    backward products of the attention and the in-projection (autograd's dense dQ, dK, dV and
    dA: 4 of the 5 products of [L, L] or [L, 3C] size per class).

    Args:
        tokens: last-block input [1, 1 + N, C] (no grad needed).
        text_features: normalised [T, D]; the first ``num_classes`` rows are the targets.
        weights: the last block's linear layers cast for the compute dtype (default: as stored).

    Returns:
        (cams [K, N] min-max scaled, last-block attention [1 + N, 1 + N] averaged over heads).
    """
    visual = clip.model.visual
    last_block = visual.transformer.resblocks[-1]
    weights = weights or block_weights(last_block)
    with torch.no_grad():
        normed = last_block.ln_1(tokens)
        query, key, value = attention_heads(last_block, normed, weights)
        mixed, head_mean, attention = attention_with_weights(query, key, value)
    mixed.requires_grad_(True)
    with torch.enable_grad():
        out = block_tail(last_block, tokens.detach(), mixed, weights)
        features = F.normalize(pooled_patch_features(visual, out).float(), dim=-1)
        logits = clip.model.logit_scale.exp() * features @ text_features.T
        probabilities = logits.softmax(dim=-1)[0, :num_classes]
        # one backward per class through the one forward (the graph kept): on a 2-core CPU 9-21 %
        # faster for 1-3 classes than one vmapped backward (is_grads_batched)
        gradients = torch.cat([
            torch.autograd.grad(probabilities[k], mixed, retain_graph=k < num_classes - 1)[0]
            for k in range(num_classes)
        ])  # fmt: skip
    qkv_means = patch_mean_qkv_gradient(gradients, query, key, value, attention, mixed.detach())
    channel_weights = qkv_means @ weights.in_proj[0].float()
    cams = torch.relu(channel_weights @ normed[0, 1:].float().T)
    # pytorch-grad-cam min-max scales each target layer's map, then the mean over layers again;
    # with one layer the second pass matters only where the map's maximum is near the 1e-7 epsilon.
    return min_max(min_max(cams)), head_mean[0]


def patch_mean_qkv_gradient(
    grad_mixed: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention: torch.Tensor,
    mixed: torch.Tensor,
) -> torch.Tensor:
    """The mean over patch tokens (all but token 0, the class token) of a target's gradient at the
    attention's query, key and value, from its gradient at the mixed values, in float32.

    With softmax weights P = softmax(s q k^T), s = d^-1/2, mixed values o = P v and G = d target / d o
    (per head), the softmax backward is dS_ij = P_ij (G_i . v_j - G_i . o_i), and
    dq_i = s sum_j dS_ij k_j, dk_j = s sum_i dS_ij q_i, dv_j = sum_i P_ij G_i. Their patch means need
    only sums of dS: a softmax row's gradient sums to 0, so sum_{j>=1} dS_ij = -dS_i0, and
    sum_{i>=1} dS_ij = (sum_{i>=1} P_ij G_i) . v_j - sum_{i>=1} P_ij (G_i . o_i): one [L, L] x [L, d]
    product per head and class instead of autograd's four.

    Args:
        grad_mixed: G [K, heads, L, d], one row per target class.
        query, key, value, mixed: [1, heads, L, d].
        attention: softmax weights P [1, heads, L, L], a row per query.

    Returns:
        [K, 3 * heads * d] in the in-projection's output layout (query, key, value; head by head).
    """
    patches = attention.shape[-1] - 1
    scale = query.shape[-1] ** -0.5
    # einsum folds the classes into one product per head (a broadcast matmul would copy P per class);
    # the two passes over all of P run in P's dtype (under bf16 autocast: bf16 products)
    gradient, to_class = grad_mixed.float(), attention[0, ..., 0].float()  # P_i0 [heads, L]
    query, key, value, mixed = (part[0].float() for part in (query, key, value, mixed))
    value_mean = torch.einsum("hi,khid->khd", 1 - to_class, gradient) / patches
    own = torch.einsum("khid,hid->khi", gradient, mixed)  # G_i . o_i
    to_class_token = to_class * (torch.einsum("khid,hd->khi", gradient, value[:, 0]) - own)  # dS_i0
    key_mean = torch.einsum("khi,hid->khd", -to_class_token, query) * (scale / patches)
    # sum_{i>=1} P_ij G_i as [d, L] per head (G^T P: on a 2-core Xeon 1.5x faster than P^T G for one class)
    patch_rows = attention[0, :, 1:]
    spread = torch.einsum("khid,hij->khdj", grad_mixed[:, :, 1:], patch_rows).float()
    spread_own = torch.einsum("khi,hij->khj", own[..., 1:].to(patch_rows.dtype), patch_rows).float()
    column = torch.einsum("khdj,hjd->khj", spread, value) - spread_own
    query_mean = torch.einsum("khj,hjd->khd", column, key) * (scale / patches)
    return torch.stack([query_mean, key_mean, value_mean], dim=1).flatten(1)


def caa_transition(attention: torch.Tensor) -> torch.Tensor:
    """Affinity from patch attention [N, N]: normalise columns then rows three times, symmetrise, square."""
    transition = attention
    for _ in range(3):
        transition = transition / transition.sum(dim=0, keepdim=True)
        transition = transition / transition.sum(dim=1, keepdim=True)
    transition = (transition + transition.T) / 2
    return transition @ transition


def region_box_mask(cam: np.ndarray, threshold: float) -> np.ndarray:
    """CLIP-ES's CAA box mask (``scoremap2bbox`` with ``multi_contour_eval=True``).

    The map is quantised to uint8 (``(cam * 255).astype(uint8)``, truncating) and thresholded at
    ``> int(threshold * max of the uint8 map)``; every contour (outer and inner, ``RETR_TREE``)
    gives its bounding rect x, y, w, h, clipped as x1 = min(x + w, W - 1), y1 = min(y + h, H - 1),
    and the box covers rows y..y1-1 and columns x..x1-1, so a box touching the right or bottom
    edge loses its last column or row, as in the published code.

    Args:
        cam: float [h, w] in [0, 1].

    Returns:
        float32 [h, w]: 1 inside some box, else 0.
    """
    height, width = cam.shape
    quantised = (cam * 255).astype(np.uint8)
    binary = (quantised > int(threshold * quantised.max())).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros(cam.shape, dtype=np.float32)
    for contour in contours:
        left, top, box_width, box_height = cv2.boundingRect(contour)
        mask[top : min(top + box_height, height - 1), left : min(left + box_width, width - 1)] = 1.0
    return mask


def refine_with_affinity(
    cams: torch.Tensor, transition: torch.Tensor, grid: tuple[int, int], threshold: float
) -> torch.Tensor:
    """CAA: refined_k = T_k @ cam_k, with T's columns outside class k's boxes zeroed; min-max scaled.

    Args:
        cams: [K, N] in [0, 1]; transition: [N, N].

    Returns:
        [K, N].
    """
    boxes = np.stack([region_box_mask(cam.reshape(grid).cpu().numpy(), threshold).ravel() for cam in cams])
    masked = torch.from_numpy(boxes).to(cams.device) * cams
    return min_max(masked @ transition.T)


class ClipEsCam(CachedImageEncoder):
    """CAMs of an image's classes from a CLIP model; the model is built once and reused.

    The text-independent part (every view through all blocks but the last) runs once per image
    (:meth:`views`), or once per batch of images (:meth:`embed_batch`, views of equal patch grid
    across the batch's images as one forward); ``class_maps`` can then be called for several
    prompt sets (POLE uses this to re-prompt without re-encoding).
    """

    def __init__(self, clip: ClipModel, options: CamOptions | None = None, autocast_dtype: torch.dtype | None = None):
        super().__init__(autocast_dtype)
        self.clip = clip
        self.options = options or CamOptions()
        self._views: list[View] = []
        self._weights: list[BlockWeights] = []

    def cast_weights(self) -> list[BlockWeights]:
        """Every block's linear layers in the autocast dtype (as stored without autocast), cast on
        first use; in bf16 on a CPU that can, packed for oneDNN (:func:`block_weights`) but for the
        last block's, which GradCAM differentiates through."""
        if not self._weights:
            blocks = self.clip.model.visual.transformer.resblocks
            pack = self.autocast_dtype == torch.bfloat16 and can_pack_bf16_weights(self.device)
            self._weights = [
                block_weights(block, self.autocast_dtype, packed=pack and index < len(blocks) - 1)
                for index, block in enumerate(blocks)
            ]
        return self._weights

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for a Ray worker) without the cast weights (170 MB in bf16 for ViT-B/16): the
        worker casts its own on first use."""
        return {**self.__dict__, "_weights": []}

    @property
    def device(self) -> torch.device:
        return self.clip.device

    def view_tensor(self, rgb: np.ndarray, scale: float, flipped: bool) -> torch.Tensor:
        """Normalised [1, 3, H', W'] with H', W' = ceil(scale * side / patch) * patch.

        The uint8 image is resized with PIL's bicubic filter (CLIP-ES's torchvision ``Resize``
        on a PIL image), then flipped as a tensor.
        """
        patch = self.clip.patch_size
        height, width = rgb.shape[:2]
        size = (max(1, math.ceil(scale * height / patch)) * patch, max(1, math.ceil(scale * width / patch)) * patch)
        resized = np.array(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BICUBIC))
        image = self.clip.image_tensor(resized)
        return self.clip.normalize(image.flip(-1) if flipped else image)

    def views(self, rgb: np.ndarray) -> list[View]:
        """The views of uint8 [H, W, 3] ``rgb`` (scale by scale, each unflipped then flipped):
        taken from :meth:`embed_batch` when that encoded this array, else encoded now."""
        self.set_image(rgb)
        return self._views

    def encode_views(self, rgb: np.ndarray) -> list[View]:
        """The views of one image, encoded now (see :meth:`encode_batch`)."""
        return self.encode_batch([rgb])[0]

    @torch.no_grad()
    def encode_batch(self, images: list[np.ndarray]) -> list[list[View]]:
        """Run every view of every image through all blocks but the last, collecting window
        attention: per image its views, scale by scale, each unflipped then flipped.

        Views of equal size run as one batch: a scale's flipped view with the unflipped one, and
        across images those of equal size (VOC's images come in a few sizes). Each view's tokens
        are its own row of the batch, so batching changes float rounding only.
        """
        flips = (False, True) if self.options.flip else (False,)
        wanted = [(index, scale, flipped) for index in range(len(images)) for scale in self.options.scales
                  for flipped in flips]  # fmt: skip
        tensors = [self.view_tensor(images[index], scale, flipped) for index, scale, flipped in wanted]
        groups: dict[tuple[int, ...], list[int]] = {}
        for position, tensor in enumerate(tensors):
            groups.setdefault(tuple(tensor.shape[2:]), []).append(position)
        encoded: dict[int, View] = {}
        for members in groups.values():
            batch = torch.cat([tensors[position] for position in members])
            tokens, attention_sum, count = self._through_window_blocks(batch)
            grid = (batch.shape[2] // self.clip.patch_size, batch.shape[3] // self.clip.patch_size)
            for row, position in enumerate(members):
                encoded[position] = View(tokens[row : row + 1], attention_sum[row], count, grid, wanted[position][2])
        per_image: list[list[View]] = [[] for _ in images]
        for position, (index, _, _) in enumerate(wanted):
            per_image[index].append(encoded[position])
        return per_image

    def _through_window_blocks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Normalised views [B, 3, H', W'] through every block but the last: (last-block input
        tokens [B, 1 + N, C], attention summed over the last ``attention_layers`` of those blocks
        [B, 1 + N, 1 + N] float32, how many blocks that sum holds)."""
        blocks = self.clip.model.visual.transformer.resblocks
        window_start = max(0, len(blocks) - self.options.attention_layers)
        weights = self.cast_weights()
        with self._autocast():
            tokens = patch_tokens(self.clip.model.visual, images)
            attention_sum = torch.zeros(len(images), tokens.shape[1], tokens.shape[1], device=tokens.device)
            for index, block in enumerate(blocks[:-1]):
                tokens, attention = block_forward(block, tokens, index >= window_start, weights=weights[index])
                if attention is not None:
                    attention_sum += attention.float()
        return tokens, attention_sum, len(blocks) - 1 - window_start

    def _encode_batch(self, images: list[np.ndarray]) -> list[Any]:
        return self.encode_batch(images)

    def _install(self, encoding: Any) -> None:
        self._views = encoding

    def _embed_one(self, rgb: np.ndarray) -> None:
        self._views = self.encode_views(rgb)

    def class_maps(
        self, views: list[View], text_features: torch.Tensor, num_classes: int, size: tuple[int, int]
    ) -> torch.Tensor:
        """CAMs of the first ``num_classes`` texts, averaged over views.

        Args:
            text_features: normalised [T, D]: target classes first, then background words.
            size: (H, W) of the original image.

        Returns:
            float32 [K, H, W] in [0, 1]: the mean over views of each view's min-max scaled map,
            bilinearly resized to the image (not re-scaled after resizing or averaging).
        """
        total = torch.zeros(num_classes, *size, device=self.clip.device)
        if num_classes == 0:
            return total
        for view in views:
            with self._autocast():
                cams, last_attention = gradcam_last_block(
                    self.clip, view.tokens, text_features, num_classes, self.cast_weights()[-1]
                )
            cams, last_attention = cams.float(), last_attention.float()  # CAA, resizing and numpy in fp32
            if self.options.caa:
                attention = (view.attention_sum + last_attention) / (view.attention_count + 1)
                cams = refine_with_affinity(
                    cams, caa_transition(attention[1:, 1:]), view.grid, self.options.caa_threshold
                )
            maps = F.interpolate(
                cams.view(1, num_classes, *view.grid), size=size, mode="bilinear", align_corners=False
            )[0]
            total += maps.flip(-1) if view.flipped else maps
        return total / len(views)


def background_score(cams: torch.Tensor, alpha: float = 1.0, threshold: float | None = None) -> torch.Tensor:
    """Background channel [H, W]: (1 - max_k cam_k) ** alpha, or a constant ``threshold`` when given."""
    if threshold is not None:
        return torch.full(cams.shape[1:], float(threshold), device=cams.device)
    if cams.shape[0] == 0:
        return torch.ones(cams.shape[1:], device=cams.device)
    return (1 - cams.max(dim=0).values).clamp(min=0) ** alpha

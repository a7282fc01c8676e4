"""Frozen batch norm (DeepLabV2's): a fixed per-channel affine map, computed in the input's dtype."""

from __future__ import annotations

import torch
from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBatchNorm2d


class FrozenBatchNorm2d(TorchvisionFrozenBatchNorm2d):
    """torchvision's frozen batch norm (same parameters, buffers and float32 results) whose output
    keeps the input's dtype: under bf16 autocast a convolution's bf16 output stays bf16, where
    torchvision's float32 scale promotes it to float32 and the next convolution casts it back (on
    a 2-core AVX512-BF16 CPU that made a DeepLabV2-ResNet101 bf16 training step 1.2x slower)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> x * scale + shift with scale = weight / sqrt(running_var + eps),
        shift = bias - running_mean * scale, both cast to x's dtype."""
        weight, bias = self.weight.reshape(1, -1, 1, 1), self.bias.reshape(1, -1, 1, 1)
        variance, mean = self.running_var.reshape(1, -1, 1, 1), self.running_mean.reshape(1, -1, 1, 1)
        scale = weight * (variance + self.eps).rsqrt()
        shift = bias - mean * scale
        return x * scale.to(x.dtype) + shift.to(x.dtype)

"""The Caffe-style ResNet-101 of DeepLab's published models (deeplab-pytorch's layout), dilated
to output stride 8.

It differs from torchvision's ResNet in two places that change every activation: a
downsampling bottleneck strides in its first 1x1 convolution (``reduce``), not in the 3x3; and
the stem's max pool rounds up (``ceil_mode``). Module names follow deeplab-pytorch (``reduce``,
``conv3x3``, ``increase``, ``shortcut``, each a ``conv`` + ``bn``), so its checkpoints load by
renaming the stages only (:func:`from_deeplab_pytorch`). Inputs are Caffe's: BGR, 0-255, minus
the per-channel mean :data:`CAFFE_MEAN_BGR`, no scaling.
"""

from __future__ import annotations

import torch
from torch import nn

from pseudolabel.models.frozen_norm import FrozenBatchNorm2d

CAFFE_MEAN_BGR = (104.008, 116.669, 122.675)
BLOCKS_101 = (3, 4, 23, 3)
STAGES = ((64, 256, 1, 1), (256, 512, 2, 1), (512, 1024, 1, 2), (1024, 2048, 1, 4))
"""Per stage: input channels, output channels, stride, dilation (layer3 and layer4 dilated)."""


class ConvBn(nn.Sequential):
    """Convolution without bias, batch norm (eps 1e-5), optional ReLU: deeplab-pytorch's ``_ConvBnReLU``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, dilation: int, relu: bool, frozen: bool
    ) -> None:
        padding = dilation if kernel == 3 else kernel // 2
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, bias=False))
        self.add_module("bn", FrozenBatchNorm2d(out_channels) if frozen else nn.BatchNorm2d(out_channels))
        if relu:
            self.add_module("relu", nn.ReLU())


class Bottleneck(nn.Module):
    """1x1 reduce (carries the stride) -> 3x3 dilated -> 1x1 increase, plus shortcut, then ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dilation: int, first: bool, frozen: bool
    ) -> None:
        super().__init__()
        middle = out_channels // 4
        self.reduce = ConvBn(in_channels, middle, 1, stride, 1, True, frozen)
        self.conv3x3 = ConvBn(middle, middle, 3, 1, dilation, True, frozen)
        self.increase = ConvBn(middle, out_channels, 1, 1, 1, False, frozen)
        self.shortcut = ConvBn(in_channels, out_channels, 1, stride, 1, False, frozen) if first else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.increase(self.conv3x3(self.reduce(x))) + self.shortcut(x))


class Stem(nn.Sequential):
    """7x7 stride-2 convolution + BN + ReLU, then a 3x3 stride-2 max pool that rounds up."""

    def __init__(self, frozen: bool) -> None:
        super().__init__()
        self.add_module("conv1", ConvBn(3, 64, 7, 2, 1, True, frozen))
        self.add_module("pool", nn.MaxPool2d(3, 2, 1, ceil_mode=True))


def residual_stage(index: int, blocks: int, frozen: bool) -> nn.Sequential:
    """Stage ``index`` (0-3) of :data:`STAGES` with ``blocks`` bottlenecks named block1, block2, ..."""
    in_channels, out_channels, stride, dilation = STAGES[index]
    stage = nn.Sequential()
    for number in range(blocks):
        first = number == 0
        block = Bottleneck(
            in_channels if first else out_channels, out_channels, stride if first else 1, dilation, first, frozen
        )
        stage.add_module(f"block{number + 1}", block)
    return stage


def from_deeplab_pytorch(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """deeplab-pytorch keys -> this package's DeepLabV2 keys.

    Accepts its ``DeepLabV2_ResNet101_MSC`` state dict (``base.`` prefix, ASPP ``aspp.c0..c3``)
    and its ``DeepLabV1_ResNet101`` COCO init (no prefix; its 1x1 classifier ``fc`` is dropped).
    ``layer1`` (the stem) becomes ``stem``, ``layer2..5`` become ``layer1..4``, ``aspp.cN``
    becomes ``aspp.branches.N``; BN's ``num_batches_tracked`` is dropped (batch norm is frozen).
    """
    renamed = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.").removeprefix("base.")
        head, _, rest = key.partition(".")
        if head == "fc" or key.endswith("num_batches_tracked"):
            continue
        if head == "aspp":
            branch, _, parameter = rest.partition(".")
            key = f"aspp.branches.{branch.removeprefix('c')}.{parameter}"
        elif head == "layer1":
            key = f"stem.{rest}"
        elif head.startswith("layer") and head[5:].isdigit():
            key = f"layer{int(head[5:]) - 1}.{rest}"
        renamed[key] = value
    return renamed


def is_deeplab_pytorch(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has deeplab-pytorch's layout (its stem's first convolution key)."""
    return any(key.removeprefix("module.").removeprefix("base.") == "layer1.conv1.conv.weight" for key in state_dict)

"""DeepLabV2: a dilated ResNet (output stride 8, frozen batch norm) and ASPP as the SUM of four
dilated 3x3 convolutions (rates 6, 12, 18, 24), each initialised N(0, 0.01) with zero bias.

Backbones: ``resnet101-caffe`` is DeepLab's own (deeplab-pytorch's layout, Caffe inputs; its
published COCO init and VOC model load, :mod:`pseudolabel.models.caffe_resnet`); ``resnet101``,
``resnet50`` and ``resnet18`` are torchvision's (ImageNet mean/std inputs).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pseudolabel.core.errors import ConfigError, WeightsError
from pseudolabel.models.caffe_resnet import BLOCKS_101, Stem, from_deeplab_pytorch, is_deeplab_pytorch, residual_stage
from pseudolabel.models.frozen_norm import FrozenBatchNorm2d
from pseudolabel.models.weights import read_state_dict, resolve_weights

CAFFE_BACKBONE = "resnet101-caffe"
BACKBONES = (CAFFE_BACKBONE, "resnet101", "resnet50", "resnet18")
"""resnet101-caffe is DeepLabV2's published one; torchvision's resnet101 is the ImageNet-init
alternative; the smaller ones are for quick experiments and tests."""
ASPP_RATES = (6, 12, 18, 24)
NAMED_WEIGHTS = {
    ("resnet101", "default"): "resnet101_imagenet",
    ("resnet101", "imagenet"): "resnet101_imagenet",
    (CAFFE_BACKBONE, "default"): "deeplab_coco_init",
    (CAFFE_BACKBONE, "coco"): "deeplab_coco_init",
}
"""``--backbone-weights`` short names per backbone -> registry names; ``default`` is each
backbone's published initialisation (ImageNet for torchvision's, COCO for DeepLab's own)."""
MSC_SCALES = (1.0, 0.5, 0.75)
"""deeplab-pytorch's MSC: the input, then 0.5 and 0.75 of it; logits max-fused on the first's grid."""


class Aspp(nn.Module):
    """Atrous spatial pyramid pooling, DeepLabV2 style: the sum of parallel dilated 3x3 convolutions."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate, bias=True) for rate in rates
        )
        for branch in self.branches:
            nn.init.normal_(branch.weight, mean=0.0, std=0.01)
            nn.init.zeros_(branch.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> logits [B, K, h, w]."""
        return sum(branch(features) for branch in self.branches)


class DeepLabV2(nn.Module):
    """ResNet body with dilation 2 in layer3 and 4 in layer4 (stride 8), then ASPP.

    Args:
        backbone: ``resnet101`` (DeepLabV2), ``resnet50`` or ``resnet18``.
        freeze_bn: replace batch norm by frozen batch norm (DeepLabV2 does).
    """

    def __init__(self, num_classes: int, backbone: str = "resnet101", freeze_bn: bool = True) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"--backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.freeze_bn = freeze_bn
        if backbone == CAFFE_BACKBONE:
            self.stem = Stem(freeze_bn)
            self.layer1, self.layer2, self.layer3, self.layer4 = (
                residual_stage(index, blocks, freeze_bn) for index, blocks in enumerate(BLOCKS_101)
            )
            self.aspp = Aspp(2048, num_classes)
            return
        if backbone == "resnet18":
            resnet = torchvision.models.resnet18(weights=None)
            _dilate_basic_blocks(resnet)
        else:
            norm = FrozenBatchNorm2d if freeze_bn else nn.BatchNorm2d
            builder = getattr(torchvision.models, backbone)
            resnet = builder(weights=None, replace_stride_with_dilation=[False, True, True], norm_layer=norm)
        if freeze_bn and backbone == "resnet18":
            resnet = _freeze_batch_norm(resnet)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.aspp = Aspp(resnet.fc.in_features, num_classes)

    @property
    def input_style(self) -> str:
        """``caffe`` (BGR 0-255 minus the mean) or ``imagenet`` (RGB 0-1, mean/std)."""
        return "caffe" if self.backbone_name == CAFFE_BACKBONE else "imagenet"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, H, W] -> logits [B, K, ceil(H/8), ceil(W/8)]."""
        x = self.stem(images)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.aspp(x)

    def multi_scale(self, images: torch.Tensor, scales: tuple[float, ...] = MSC_SCALES) -> list[torch.Tensor]:
        """deeplab-pytorch's MSC: the logits of each scale at their own size, then (last) their
        element-wise max on the first scale's grid, the others resized bilinearly to it."""
        outputs = [
            self(
                images
                if scale == 1.0
                else F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
            )
            for scale in scales
        ]
        return [*outputs, fuse_max(outputs)]

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """SGD groups: backbone (lr, decay), ASPP weights (10 lr, decay), ASPP biases (20 lr, no decay)."""
        backbone = [p for name, p in self.named_parameters() if not name.startswith("aspp.") and p.requires_grad]
        aspp_weights = [branch.weight for branch in self.aspp.branches]
        aspp_biases = [branch.bias for branch in self.aspp.branches]
        return [
            {"params": backbone, "lr": lr, "weight_decay": weight_decay, "lr_mult": 1},
            {"params": aspp_weights, "lr": 10 * lr, "weight_decay": weight_decay, "lr_mult": 10},
            {"params": aspp_biases, "lr": 20 * lr, "weight_decay": 0.0, "lr_mult": 20},
        ]


def _dilate_basic_blocks(resnet: nn.Module) -> None:
    """Output stride 8 for BasicBlock ResNets (torchvision only dilates Bottleneck ones)."""
    for layer, dilation in ((resnet.layer3, 2), (resnet.layer4, 4)):
        for index, block in enumerate(layer):
            for conv in (block.conv1, block.conv2):
                if conv.stride == (2, 2):
                    conv.stride = (1, 1)
                conv.dilation = (
                    (dilation, dilation) if not (index == 0 and conv is block.conv1) else (dilation // 2, dilation // 2)
                )
                conv.padding = conv.dilation
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)


def _freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d holding the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batch_norm(child)
    return module


def fuse_max(logits: list[torch.Tensor]) -> torch.Tensor:
    """Element-wise max of logits [B, K, h_i, w_i], each resized bilinearly to the first's grid."""
    size = logits[0].shape[2:]
    resized = [
        item if item.shape[2:] == size else F.interpolate(item, size=size, mode="bilinear", align_corners=False)
        for item in logits
    ]
    return torch.stack(resized).max(dim=0).values


def load_backbone_weights(model: DeepLabV2, weights: str) -> None:
    """Initialise the network from ``weights``.

    Accepts ``default`` (the backbone's published init), ``imagenet`` (torchvision's ResNet-101
    from the weights cache), ``coco``
    (deeplab-pytorch's ``deeplabv1_resnet101-coco.pth``, for ``resnet101-caffe``), ``random``,
    or a file: a torchvision ResNet state dict, or a deeplab-pytorch one (its COCO init, or a
    trained ``DeepLabV2_ResNet101_MSC`` whose ASPP is then loaded too when its class count fits).
    Classifiers that do not fit are dropped; any other mismatch is an error.
    """
    name = NAMED_WEIGHTS.get((model.backbone_name, weights), weights)
    if weights in {key[1] for key in NAMED_WEIGHTS} and name == weights:
        raise ConfigError(f"--backbone-weights {weights} does not exist for --backbone {model.backbone_name}")
    path = resolve_weights(name, "backbone")
    if path is None:
        return
    state = read_state_dict(path, "backbone weights")
    if is_deeplab_pytorch(state):
        if model.backbone_name != CAFFE_BACKBONE:
            raise WeightsError(f"{path} is a deeplab-pytorch checkpoint: it needs --backbone {CAFFE_BACKBONE}")
        renamed = from_deeplab_pytorch(state)
    else:
        renamed = _torchvision_keys(state)
    aspp = renamed.get("aspp.branches.0.weight")
    if aspp is not None and aspp.shape != model.aspp.branches[0].weight.shape:
        renamed = {key: value for key, value in renamed.items() if not key.startswith("aspp.")}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    missing = [key for key in missing if not key.startswith("aspp.")]
    if missing or unexpected:
        raise WeightsError(
            f"backbone weights {path} do not fit {model.backbone_name}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def _torchvision_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet keys -> DeepLabV2 keys (``conv1``/``bn1`` -> ``stem.0``/``stem.1``; ``fc`` dropped)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        head, _, rest = key.partition(".")
        stem_index = {"conv1": 0, "bn1": 1}.get(head)
        renamed[f"stem.{stem_index}.{rest}" if stem_index is not None else key] = value
    return renamed

"""deeplab-pytorch's published checkpoint layout, and random weights in it that a test can rebuild.

``fixtures/deeplab_pytorch_keys.json.gz`` lists the key and shape of every tensor of
deeplab-pytorch's ``DeepLabV2_ResNet101_MSC(21)`` (the VOC model) and ``DeepLabV1_ResNet101(91)``
(the COCO init), taken from its own modules (convert.py saves exactly that state dict).
``fixtures/deeplab_pytorch_msc.npz`` holds the logits deeplab-pytorch's own ``MSC`` module gives
in eval mode for :func:`random_state_dict` of the VOC layout on a crop of an example image (the
audit script that made it ran the published code; see docs/methods.md).
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEYS_FILE = FIXTURES / "deeplab_pytorch_keys.json.gz"
MSC_FILE = FIXTURES / "deeplab_pytorch_msc.npz"
CROP = (slice(40, 137), slice(60, 189))
"""The example image crop (97 x 129 pixels) the MSC fixture was computed on."""


def published_shapes(layout: str) -> dict[str, list[int]]:
    """Key -> shape of ``voc12`` (the trained MSC model) or ``coco`` (the init)."""
    with gzip.open(KEYS_FILE, "rt") as handle:
        return json.load(handle)[layout]


def random_state_dict(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic weights for a key layout: He-scaled convolutions (halved so 100 blocks stay
    finite), batch norms near identity, small biases."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith(".weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) * 0.5 * math.sqrt(2 / fan_in)
        elif key.endswith(".weight") and ".bn." in key:
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
    return state

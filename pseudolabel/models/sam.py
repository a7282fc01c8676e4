"""Segment Anything through Meta's ``segment_anything`` package; weights from the weights manager.

Checkpoints are read with ``torch.load(weights_only=True)`` (the package's own builders would
unpickle without that guard), so the model is built empty and the state dict loaded here.
"""

from __future__ import annotations

from typing import Any

import torch

from pseudolabel.errors import ConfigError, WeightsError
from pseudolabel.models.weights import resolve_weights

SAM_VARIANTS = ("vit_b", "vit_l", "vit_h")
DEFAULT_CHECKPOINT = "default"
"""``--sam-checkpoint default`` means the registry checkpoint of the ``--sam`` variant."""


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

    if variant not in SAM_VARIANTS:
        raise ConfigError(f"--sam must be one of {', '.join(SAM_VARIANTS)}, got {variant!r}")
    path = resolve_weights(f"sam_{variant}" if checkpoint == DEFAULT_CHECKPOINT else checkpoint, "sam")
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

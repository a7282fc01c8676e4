"""CLIP inputs of image regions: the image masked by a soft map (a CAM, a SAM mask), whole or
cropped around the region. POLE, the exclusion stage and zero-shot selection all encode these."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.models.clip import ClipModel


def masked_images(clip: ClipModel, rgb: np.ndarray, cams: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Normalised [K, 3, size, size] CLIP inputs of ``rgb * cam_k``.

    Args:
        rgb: uint8 [H, W, 3]; cams: [K, H, W] in [0, 1].
        size: side of the input (default: the model's training size).
    """
    size = size or clip.input_size
    masked = clip.image_tensor(rgb) * cams[:, None].float()
    resized = F.interpolate(masked, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return clip.normalize(resized.clamp(0, 1))


def region_images(clip: ClipModel, rgb: np.ndarray, regions: torch.Tensor, crop: bool) -> torch.Tensor:
    """CLIP inputs [R, 3, S, S] of ``rgb * region``: the whole image, or a square crop around each region
    (side = 1.2 x the longer side of its bounding box, zero padding outside the image)."""
    if not crop:
        return masked_images(clip, rgb, regions)
    image = clip.image_tensor(rgb)[0]
    size = clip.input_size
    inputs = []
    for region in regions.to(image.device).float():
        rows, columns = torch.nonzero(region > 0, as_tuple=True)
        if len(rows) == 0:
            inputs.append(torch.zeros(3, size, size, device=image.device))
            continue
        centre_y, centre_x = (rows.min() + rows.max()) / 2, (columns.min() + columns.max()) / 2
        side = 1.2 * float(max(rows.max() - rows.min(), columns.max() - columns.min()) + 1)
        top, left = int(centre_y - side / 2), int(centre_x - side / 2)
        bottom, right = top + int(side) + 1, left + int(side) + 1
        masked = image * region
        pad = (max(0, -left), max(0, right - masked.shape[2]), max(0, -top), max(0, bottom - masked.shape[1]))
        window = F.pad(masked, pad)[:, top + pad[2] : bottom + pad[2], left + pad[0] : right + pad[0]]
        inputs.append(F.interpolate(window[None], size=(size, size), mode="bicubic", antialias=True)[0])
    return clip.normalize(torch.stack(inputs).clamp(0, 1))

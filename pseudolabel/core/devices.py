"""``--device`` and ``--precision`` to a torch device and an autocast dtype."""

from __future__ import annotations

import os

import torch

from pseudolabel.core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(text: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise ConfigError(f"--device {text!r} is not a device (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {text}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {text}: only {torch.cuda.device_count()} CUDA devices here")
    elif device.type != "cpu":
        raise ConfigError(f"--device {text}: only cpu and cuda are supported")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision (None = plain fp32); ``auto`` is bf16 on CUDA, fp32 on CPU."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision == "fp32":
        return None
    if device.type != "cuda":
        raise ConfigError(f"--precision {precision} needs a CUDA device; use fp32 on the CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def decode_workers(requested: int | None, device: torch.device) -> int:
    """Image-decoding worker processes: ``requested`` when given; else 0 on the CPU, where the
    model already keeps every core busy and decoding processes only compete with it (on a
    2-core machine 2 workers made CAM generation 28 % slower in one run and no faster in
    another), and min(4, cores - 1) on CUDA, where decoding ahead keeps the GPU fed."""
    if requested is not None:
        return requested
    if device.type == "cpu":
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def default_batch_size(requested: int | None, device: torch.device | None) -> int:
    """Images labelled together: ``requested`` when given; else 4 on CUDA and on a Ray cluster
    (``device`` None), where SAM's image encoder takes them in one pass, and 1 on the CPU, where a
    batch only holds more memory."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {requested}")
        return requested
    return 1 if device is not None and device.type == "cpu" else 4

"""``--device`` and ``--precision`` to a torch device and an autocast dtype."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pseudolabel.core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPUINFO = Path("/proc/cpuinfo")
"""Where Linux lists the CPU's flags."""


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


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 among the Linux
    ``/proc/cpuinfo`` flags); elsewhere PyTorch emulates bf16, slower than fp32.
    ``PSEUDOLABEL_CPU_BF16=0`` says no (so ``--precision auto`` stays fp32 on any CPU)."""
    if os.environ.get("PSEUDOLABEL_CPU_BF16") == "0":
        return False
    try:
        flags = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for a ``--precision`` on ``device``: ``auto`` is bf16 on a
    CUDA device that supports it and on a CPU with native bf16, else fp32.

    Raises:
        ConfigError: an unknown precision, or fp16 on the CPU.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return precision


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of :func:`resolve_precision` (None = plain fp32)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[resolve_precision(precision, device)]


@dataclass(frozen=True)
class LocalWorkers:
    """How a local run uses worker processes besides its own.

    Attributes:
        processes: DataLoader worker processes (0: everything in this process).
        label_in_workers: each worker labels the images it decodes, one image at a time with one
            torch thread; otherwise workers only decode ahead of the model here.
    """

    processes: int
    label_in_workers: bool = False


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, as a container or ``taskset`` limits it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_workers(requested: int | None, device: torch.device, batch_size: int = 1) -> LocalWorkers:
    """Worker processes for ``generate`` and ``predict`` on this machine (``--num-workers``).

    On CUDA they decode ahead of the GPU, which labels here in batches: ``requested``, else
    min(4, cores - 1). On the CPU ``requested`` workers each decode *and label* their own images
    with one torch thread, and by default (0) this process labels with every core's threads: on
    the 2-core Xeon two one-thread workers labelled CLIP-ES CAMs at 0.96-1.26x (median 1.03x) the
    speed of one two-thread process in fp32 and 0.97-1.6x in bf16 over seven paired runs (masks equal
    up to float rounding), which does not pay for a process per core by default; where one image's operations
    spread badly over many cores, workers can. Decode-only workers on the CPU would compete with
    the model for the cores. A worker is forked and keeps one thread: GNU OpenMP hangs a forked
    child that starts a thread team after its parent has used one. With ``batch_size`` > 1 on the
    CPU the batch is labelled here and workers only decode.
    """
    if device.type != "cpu":
        return LocalWorkers(max(0, min(4, usable_cores() - 1)) if requested is None else requested)
    count = requested or 0
    return LocalWorkers(count, count > 0 and batch_size == 1)


def default_batch_size(requested: int | None, device: torch.device | None) -> int:
    """Images labelled together: ``requested`` when given; else 4 on CUDA and on a Ray cluster
    (``device`` None), where SAM's image encoder takes them in one pass, and 1 on the CPU, where a
    batch only holds more memory."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {requested}")
        return requested
    return 1 if device is not None and device.type == "cpu" else 4

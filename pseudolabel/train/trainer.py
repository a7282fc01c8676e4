"""Train DeepLabV2 on pseudo-label masks: SGD with 1x/10x/20x groups and a poly schedule,
gradient accumulation, optional multi-scale (MSC) loss, balanced cross-entropy, bf16 autocast
on CUDA, DDP under ``torchrun`` (gloo on CPU), exact resume, metrics.jsonl, NaN stop.

The loss of a batch is the mean over its samples of each sample's mean cross-entropy over its
valid (non-255) pixels, so accumulation steps and DDP processes add up to exactly the loss of
one process with the whole batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from pseudolabel.core.devices import autocast_dtype, resolve_device
from pseudolabel.core.errors import ConfigError, PseudolabelError
from pseudolabel.core.files import atomic_output, output_errors
from pseudolabel.core.masks import IGNORE_INDEX
from pseudolabel.datasets.base import Dataset
from pseudolabel.models.deeplab import DeepLabV2, load_backbone_weights
from pseudolabel.runner.lock import RunLock
from pseudolabel.runner.manifest import Manifest
from pseudolabel.runner.torchrun import Place, torchrun_place
from pseudolabel.train.data import TRAIN_SCALES, GlobalSamples, TrainingCrops, check_masks

LOSSES = ("ce", "balanced")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; defaults are DeepLabV2's VOC schedule (docs/methods.md).

    ``freeze_bn=None`` freezes batch norm for pretrained backbones (DeepLabV2) and trains it for
    ``random`` ones (frozen random statistics would leave the network unnormalised).
    """

    def batch_norm_frozen(self) -> bool:
        """Whether batch norm is frozen for this run."""
        return self.freeze_bn if self.freeze_bn is not None else self.backbone_weights != "random"

    out_dir: Path
    masks_dir: Path
    iterations: int = 20_000
    batch_size: int = 10
    accumulate: int = 2
    crop_size: int = 321
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    lr_step: int = 10
    msc: bool = True
    train_scales: tuple[float, ...] = TRAIN_SCALES
    loss: str = "ce"
    backbone: str = "resnet101"
    backbone_weights: str = "default"
    freeze_bn: bool | None = None
    seed: int = 0
    log_every: int = 20
    save_every: int = 1000
    val_every: int = 0
    num_workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    resume: bool = False


class TrainingDiverged(PseudolabelError):
    """The loss became NaN or infinite."""


def distributed_from_env(device_type: str) -> Place:
    """This process's place (rank 0 of 1 when run alone), after joining the process group when
    ``torchrun`` set WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    place = torchrun_place()
    if place is None:
        return Place()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Place(dist.get_rank(), dist.get_world_size(), place.local_rank)


def poly_factor(iteration: int, total: int, power: float, step: int = 1) -> float:
    """The learning-rate factor of 0-based ``iteration``: (1 - s / total) ** power, where s is
    ``iteration`` rounded down to a multiple of ``step`` (deeplab-pytorch's ``PolynomialLR``
    with ``LR_DECAY: 10`` changes the rate every 10 iterations)."""
    return max(0.0, 1.0 - (iteration - iteration % step) / total) ** power


def make_optimizer(model: DeepLabV2, config: TrainConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over the 1x/10x/20x groups with the poly schedule over ``config.iterations``."""
    optimizer = torch.optim.SGD(
        model.parameter_groups(config.lr, config.weight_decay), lr=config.lr, momentum=config.momentum
    )
    total, power, step = config.iterations, config.poly_power, config.lr_step
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: poly_factor(i, total, power, step))
    return optimizer, scheduler


def sample_mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, balanced: bool) -> torch.Tensor:
    """Mean over samples of each sample's mean CE over its valid pixels (255 ignored).

    Args:
        logits: [B, K, h, w]; labels: int64 [B, h, w].
        balanced: weight each class by the inverse of its pixel count in the sample.
    """
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = labels != IGNORE_INDEX
    if balanced:
        safe = labels.clamp(max=logits.shape[1] - 1) * valid
        counts = F.one_hot(safe, logits.shape[1]).mul(valid[..., None]).flatten(1, 2).sum(dim=1).float()
        weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        weights = weights / weights.gt(0).sum(dim=1, keepdim=True).clamp(min=1)
        pixel_weights = torch.gather(weights, 1, safe.flatten(1)).view_as(labels) * valid
        per_sample = (per_pixel * pixel_weights).flatten(1).sum(dim=1)
    else:
        per_sample = (per_pixel * valid).flatten(1).sum(dim=1) / valid.flatten(1).sum(dim=1).clamp(min=1)
    return per_sample.mean()


TRAINING_LAYOUT = torch.channels_last
"""The memory layout of the network's weights and input crops while training: channels last
(NHWC), in which oneDNN's and cuDNN's convolutions run fastest. Measured on a 2-core AVX512-BF16
CPU, DeepLabV2-ResNet101 forward + backward of 5 MSC crops of 321 px: fp32 13.6 -> 12.1 s,
bf16 7.7 -> 6.6 s. Checkpoints hold the same values in either layout."""


class MscNetwork(torch.nn.Module):
    """``forward(images, msc)``: plain logits, or with MSC the list of per-scale logits and their max.

    Going through ``forward`` (not ``multi_scale`` directly) lets DDP synchronise MSC gradients.
    """

    def __init__(self, model: DeepLabV2) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, msc: bool = False) -> list[torch.Tensor]:
        return self.model.multi_scale(images) if msc else [self.model(images)]


def training_loss(
    network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    """CE on the logits, with MSC summed over each scale's logits at their own size and their max
    (deeplab-pytorch). Labels are resized to each output's grid by sampling each cell's centre,
    as PIL's nearest does (``nearest-exact``; torch's plain ``nearest`` takes the top-left pixel
    and shifts every label by half a cell)."""
    total = torch.zeros((), device=labels.device)
    for logits in network(images, msc=config.msc):
        small = F.interpolate(labels[:, None].float(), size=logits.shape[2:], mode="nearest-exact")[:, 0].long()
        total = total + sample_mean_cross_entropy(logits, small, config.loss == "balanced")
    return total


def checkpoint_state(
    model: DeepLabV2, optimizer: Any, scheduler: Any, iteration: int, config: TrainConfig, class_names: list[str]
) -> dict[str, Any]:
    """Everything needed to continue exactly: weights, optimiser, schedule, iteration, RNG, config."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": iteration,
        "torch_rng": torch.get_rng_state(),
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()},
        "num_classes": model.num_classes,
        "backbone": model.backbone_name,
        "freeze_bn": model.freeze_bn,
        "class_names": class_names,
    }


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save into a temporary file, then rename: a killed save never leaves a broken last.pt,
    and a failed one (torch reports a full disk as a RuntimeError) stops with an OutputError."""
    with output_errors(path, (OSError, RuntimeError)), atomic_output(path) as temp:
        torch.save(state, temp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read with ``weights_only=True``."""
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from error


@dataclass
class TrainResult:
    """Where training ended."""

    iteration: int
    last_loss: float
    seconds: float
    stopped_early: bool


@dataclass
class TrainingSession:
    """What :func:`setup_training` prepares for the loop."""

    model: DeepLabV2
    network: Any
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.LambdaLR
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    device: torch.device
    dtype: torch.dtype | None
    place: Place
    start: int


def setup_training(dataset: Dataset, config: TrainConfig) -> TrainingSession:
    """Device and process group, the model (initialised or resumed from ``last.pt``), optimizer,
    schedule and the batch stream from the resumed iteration on."""
    device = resolve_device(config.device)
    place = distributed_from_env(device.type)
    if device.type == "cuda" and place.world > 1:
        device = torch.device("cuda", place.local_rank)
    micro_batch, remainder = divmod(config.batch_size, config.accumulate * place.world)
    if remainder or micro_batch < 1:
        raise ConfigError(
            f"--batch-size {config.batch_size} must be a multiple of --accumulate {config.accumulate} x "
            f"{place.world} processes"
        )
    check_masks(dataset, config.masks_dir)
    torch.manual_seed(config.seed)
    frozen = config.batch_norm_frozen()
    if not frozen and place.world > 1 and device.type == "cpu":
        raise ConfigError(
            "trainable batch norm needs SyncBatchNorm, which runs on GPUs only; use --freeze-bn on the CPU"
        )
    model = DeepLabV2(dataset.num_classes, config.backbone, frozen)
    state = load_checkpoint(config.out_dir / "last.pt") if config.resume else None
    if state is None:
        load_backbone_weights(model, config.backbone_weights)
    else:
        model.load_state_dict(state["model"])
    model.to(device, memory_format=TRAINING_LAYOUT)
    optimizer, scheduler = make_optimizer(model, config)
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["iteration"])
    network: Any = MscNetwork(model)
    if place.world > 1:
        if not frozen:
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        network = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    crops = TrainingCrops(
        dataset, config.masks_dir, config.crop_size, config.seed, config.train_scales, model.input_style
    )
    sampler = GlobalSamples(start, config.iterations, micro_batch, config.accumulate, place.rank, place.world)
    loader = torch.utils.data.DataLoader(
        crops, batch_size=micro_batch, sampler=sampler, num_workers=config.num_workers, pin_memory=device.type == "cuda"
    )
    dtype = autocast_dtype(config.precision, device)
    return TrainingSession(model, network, optimizer, scheduler, iter(loader), device, dtype, place, start)


def train_step(session: TrainingSession, config: TrainConfig) -> tuple[float, float]:
    """One iteration: ``accumulate`` micro-batches, the loss averaged over processes, one optimizer
    and schedule step. Returns (loss, the learning rate it used); the loss may be NaN."""
    place, device, dtype = session.place, session.device, session.dtype
    session.model.train()
    total = torch.zeros((), device=device)
    for step in range(config.accumulate):
        images, labels = (t.to(device, non_blocking=True) for t in next(session.batches))
        images = images.contiguous(memory_format=TRAINING_LAYOUT)
        sync = step == config.accumulate - 1 or place.world == 1
        context = session.network.no_sync() if (place.world > 1 and not sync) else contextlib.nullcontext()
        with context, torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = training_loss(session.network, images, labels, config) / config.accumulate
        loss.backward()
        total += loss.detach()
    if place.world > 1:
        dist.all_reduce(total)
        total /= place.world
    loss_value = float(total)
    if not math.isfinite(loss_value):
        return loss_value, math.nan
    lr = session.optimizer.param_groups[0]["lr"]
    session.optimizer.step()
    session.optimizer.zero_grad(set_to_none=True)
    session.scheduler.step()
    return loss_value, lr


def diverged(loss_value: float, iteration: int, last: Path) -> TrainingDiverged:
    """The error for a non-finite loss at ``iteration``, naming the checkpoint that is kept."""
    if last.is_file():
        kept = f"the last good checkpoint is {last} (iteration {int(load_checkpoint(last)['iteration'])})"
    else:
        kept = "no checkpoint was saved yet (see --save-every)"
    return TrainingDiverged(
        f"loss became {loss_value} at iteration {iteration}; {kept}; "
        "lower --lr (2e-4 is common for noisy pseudo-labels) or use --loss balanced"
    )


def save_checkpoints(session: TrainingSession, config: TrainConfig, iteration: int, names: list[str]) -> None:
    """``last.pt`` always, ``iter_N.pt`` every ``save_every`` iterations."""
    state = checkpoint_state(session.model, session.optimizer, session.scheduler, iteration, config, names)
    save_checkpoint(config.out_dir / "last.pt", state)
    if iteration % config.save_every == 0:
        save_checkpoint(config.out_dir / f"iter_{iteration:06d}.pt", state)


def train(
    dataset: Dataset,
    config: TrainConfig,
    evaluate: Callable[[DeepLabV2], float] | None = None,
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train (or resume) and checkpoint to ``config.out_dir``.

    Args:
        evaluate: returns val mIoU for the model, called every ``val_every`` iterations (rank 0).
        stop_after: save and stop after this iteration (the schedule still spans ``iterations``).
        should_stop: polled after each iteration (Ctrl-C); True saves and stops.
        on_iteration: ``(iteration, loss)`` after each iteration (rank 0), for progress display.

    Raises:
        TrainingDiverged: NaN/inf loss; ``last.pt`` keeps the last good state.
    """
    session = setup_training(dataset, config)
    main = session.place.main
    began = time.perf_counter()
    loss_value, iteration = math.nan, session.start
    lock = RunLock(config.out_dir, (0, 1)) if main else contextlib.nullcontext()
    with lock, Manifest(config.out_dir / "metrics.jsonl") if main else _NoLog() as metrics:
        window_start, window_iterations = time.perf_counter(), 0
        while iteration < config.iterations:
            loss_value, lr = train_step(session, config)
            if not math.isfinite(loss_value):
                raise diverged(loss_value, iteration + 1, config.out_dir / "last.pt")
            iteration += 1
            window_iterations += 1
            if main:
                if on_iteration:
                    on_iteration(iteration, loss_value)
                if iteration % config.log_every == 0 or iteration == config.iterations:
                    rate = window_iterations / (time.perf_counter() - window_start)
                    metrics.write(
                        {"iter": iteration, "loss": round(loss_value, 6), "lr": lr, "it_per_s": round(rate, 3)}
                    )
                    window_start, window_iterations = time.perf_counter(), 0
                if evaluate and config.val_every and iteration % config.val_every == 0:
                    metrics.write({"iter": iteration, "val_miou": evaluate(session.model)})
            stopping = (stop_after is not None and iteration >= stop_after) or bool(should_stop and should_stop())
            if main and (iteration % config.save_every == 0 or iteration == config.iterations or stopping):
                save_checkpoints(session, config, iteration, dataset.class_names)
            if stopping:
                break
    if session.place.world > 1:
        dist.barrier()
    return TrainResult(iteration, loss_value, time.perf_counter() - began, iteration < config.iterations)


class _NoLog:
    """Metrics writer of non-main DDP processes: writes nothing."""

    def __enter__(self) -> _NoLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def write(self, record: dict[str, Any]) -> None:
        return None

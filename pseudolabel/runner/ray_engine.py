"""``--engine ray``: the images to do become a Ray dataset; one actor per worker builds the models
once and labels batches of ids, and this process writes outputs and manifest records as results
stream back, in order, exactly as the local engine does (resume, failures, Ctrl-C included).

Workers read the images, so the dataset must be at the same path on every node; outputs are
written by this process only. Ray is an optional extra: ``pip install 'pseudolabel[ray]'``.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pseudolabel.core.errors import ConfigError
from pseudolabel.datasets.base import Dataset
from pseudolabel.runner.loop import ImageFunction, Item, RunOptions, SampleSource, label_batch

INSTALL_HINT = "pip install 'pseudolabel[ray]'"


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line ConfigError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed: {INSTALL_HINT}") from error
    return ray


class LabelActor:
    """A Ray actor: builds the image function once, then labels batches of ids."""

    def __init__(self, dataset: Dataset, make_image_function: Callable[[], ImageFunction]) -> None:
        self.dataset = dataset
        self.image_function = make_image_function()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"id": ids}`` -> ``{"item": pickled Items}`` (a result or an error each)."""
        source = SampleSource(self.dataset, [str(image_id) for image_id in batch["id"]])
        items = label_batch([source[position] for position in range(len(source))], self.image_function)
        return {"item": np.array([pickle.dumps(item) for item in items], dtype=object)}


@dataclass(frozen=True)
class RayEngine:
    """Label on a Ray cluster (a :data:`~pseudolabel.runner.loop.Engine`).

    Attributes:
        address: ``None`` starts a Ray instance on this machine; ``auto`` or ``ray://host:port``
            joins a running cluster.
        workers: actors, each with its own models (None: one per GPU of the cluster, or 1 without GPUs).
        gpus_per_worker: GPUs each actor holds (None: 1 when the cluster has GPUs, else 0).

    Each actor call gets the run's ``batch_size`` ids and labels them as one batch.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--ray-workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must not be negative, got {self.gpus_per_worker:g}")

    def __call__(
        self, dataset: Dataset, ids: list[str], make_image_function: Callable[[], ImageFunction], options: RunOptions
    ) -> Generator[Item, None, None]:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        try:
            resources = ray.cluster_resources()
            workers, gpus = self._sizes(resources)
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            context.enable_progress_bars = False
            labelled = ray.data.from_items([{"id": image_id} for image_id in ids]).map_batches(
                LabelActor,
                fn_constructor_args=(dataset, make_image_function),
                batch_size=options.batch_size,
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_gpus=gpus,
                num_cpus=self._cpus_per_worker(resources, workers, gpus),
            )
            for row in labelled.iter_rows():
                yield pickle.loads(row["item"])
        finally:
            if started:
                ray.shutdown()

    def _sizes(self, resources: dict[str, float]) -> tuple[int, float]:
        """(actors, GPUs per actor) from the settings and the cluster's resources."""
        cluster_gpus = resources.get("GPU", 0.0)
        gpus = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if cluster_gpus else 0.0)
        if gpus > cluster_gpus:
            raise ConfigError(f"--gpus-per-worker {gpus:g}: the Ray cluster has {cluster_gpus:g} GPUs")
        workers = self.workers if self.workers is not None else (max(1, int(cluster_gpus // gpus)) if gpus else 1)
        return workers, gpus

    @staticmethod
    def _cpus_per_worker(resources: dict[str, float], workers: int, gpus: float) -> float:
        """CPU-only actors share the cluster's cores (whole cores each while there are enough, so
        each actor's torch threads have a core); GPU actors take one core each."""
        if gpus:
            return 1.0
        cores = resources.get("CPU", float(os.cpu_count() or 1))
        return float(cores // workers) if workers <= cores else cores / workers

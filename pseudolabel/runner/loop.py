"""Run a per-image function (scorer, refiners, decode) over a dataset split: shard and limit
selection, resume, decoding in worker processes, atomic outputs, a manifest record per image,
progress callbacks, and a clean stop on Ctrl-C (the current image is finished and recorded,
then the run stops; images labelled ahead of it, in its batch or on Ray actors, are dropped and
redone by a resume).

One image is a pure function of its id, so ``--shard i/n`` runs can go on different GPUs or
machines over the same output folder; an engine (:func:`local_engine`, or
:class:`~pseudolabel.runner.ray_engine.RayEngine`) decides where images are labelled.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pseudolabel.core.errors import ConfigError, OutputError, SampleError, UnsafePathError
from pseudolabel.core.images import write_image
from pseudolabel.core.instances import save_instances
from pseudolabel.core.masks import write_mask
from pseudolabel.core.safe_paths import id_path
from pseudolabel.core.scoremaps import ScoreMaps, save_scores
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Dataset, Sample
from pseudolabel.runner.lock import RunLock
from pseudolabel.runner.manifest import Manifest, manifest_name


@dataclass(frozen=True)
class ImageResult:
    """What labelling one image gives: the label map to write, scores to save, and what the stages
    reported.

    Attributes:
        label_map: uint8 [H, W] class ids, 255 = unsure, written as ``<id>.png`` in the VOC palette.
        scores: soft scores to save with ``--save-scores`` (None: nothing to save).
        record: extra manifest fields (stage seconds, synonym choices, ...) and summary tallies.
        picture: uint8 [H, W, 3] written as ``<id>.png`` instead of a label map (overlays).
    """

    label_map: np.ndarray | None
    scores: ScoreMaps | None = None
    record: StageRecord = field(default_factory=StageRecord)
    picture: np.ndarray | None = None


ImageFunction = Callable[[Sample], ImageResult]


@dataclass(frozen=True)
class RunOptions:
    """Where outputs go and which images to do.

    Attributes:
        out_dir: palette PNGs ``<id>.png``, the manifest and the resolved config.
        scores_dir: if set, soft scores ``<id>.npz`` (float16) are saved there too.
        overwrite: redo images whose outputs already exist.
        limit: only the first N images of the split (before sharding).
        shard: (i, n): this run does every n-th image starting at i.
        num_workers: processes decoding images ahead of the model (0 = in this process).
        label_in_workers: run the image function inside those processes too (CPU-bound ones such
            as DenseCRF refinement, and any model on the CPU; it must pickle where processes
            start by spawning).
        instances_dir: if set, instance masks a labeler keeps (Grounded-SAM) are saved there as
            ``<id>.npz``.
        batch_size: images labelled together: an image function with ``prepare_batch(samples)``
            (SAM's image encoder) runs it once per batch, then labels each image.
    """

    out_dir: Path
    scores_dir: Path | None = None
    overwrite: bool = False
    limit: int | None = None
    shard: tuple[int, int] = (0, 1)
    num_workers: int = 2
    label_in_workers: bool = False
    instances_dir: Path | None = None
    batch_size: int = 1


@dataclass
class RunSummary:
    """What a run did; ``tallies[title][key]`` adds up what the stages counted (POLE choices,
    regions exclusion dropped, ...), whatever the method."""

    selected: int = 0
    already_done: int = 0
    done: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    tallies: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(image id, one-line cause) of each failed image, in the order they failed."""

    @classmethod
    def combined(cls, summaries: list[RunSummary]) -> RunSummary:
        """One summary of runs that went side by side over disjoint shards (their longest time)."""
        total = cls(seconds=max((s.seconds for s in summaries), default=0.0))
        for part in summaries:
            total.selected += part.selected
            total.already_done += part.already_done
            total.done += part.done
            total.failed += part.failed
            total.failures += part.failures
            total.interrupted = total.interrupted or part.interrupted
            total.add_tallies(part.tallies)
        return total

    def add_tallies(self, tallies: dict[str, Counter[str]]) -> None:
        """Add one image's tallies."""
        for title, counts in tallies.items():
            self.tallies.setdefault(title, Counter()).update(counts)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as error:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from error
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return index, count


def select_ids(ids: list[str], shard: tuple[int, int], limit: int | None) -> list[str]:
    """The first ``limit`` ids, then every n-th from i: shards of one split are disjoint and cover it."""
    index, count = shard
    return ids[:limit][index::count]


def is_finished(image_id: str, out_dir: Path, scores_dir: Path | None, instances_dir: Path | None = None) -> bool:
    """True when the image's PNG is complete (and its scores and instances exist when asked for);
    False for an id that cannot name a file in ``out_dir``."""
    try:
        png = id_path(out_dir, image_id, ".png")
    except UnsafePathError:
        return False
    if not png.is_file():
        return False
    try:
        with Image.open(png) as image:
            image.verify()
    except (OSError, SyntaxError):
        return False
    extras = [folder for folder in (scores_dir, instances_dir) if folder is not None]
    return all(id_path(folder, image_id, ".npz").is_file() for folder in extras)


@dataclass
class Item:
    """One image as it comes out of a worker: the sample, or the labelled result, or an error."""

    image_id: str
    classes: tuple[int, ...] = ()
    sample: Sample | None = None
    result: ImageResult | None = None
    error: str | None = None
    seconds: StageRecord = field(default_factory=StageRecord)


class SampleSource(torch.utils.data.Dataset):
    """Decodes samples (in DataLoader workers), and runs the image function there when given one."""

    def __init__(self, dataset: Dataset, ids: list[str], image_function: ImageFunction | None = None) -> None:
        self.dataset = dataset
        self.ids = ids
        self.image_function = image_function

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, position: int) -> Item:
        item = Item(self.ids[position])
        try:
            with item.seconds.timed("load_s"):
                item.sample = self.dataset.load(item.image_id)
            item.classes = item.sample.classes
        except SampleError as error:
            item.error = str(error)
        if self.image_function is not None:
            label_batch([item], self.image_function)
        return item


def _keep_as_is(item: Any) -> Any:
    return item


def _ignore_ctrl_c(worker_id: int) -> None:
    """A DataLoader worker leaves Ctrl-C to the main process, which stops after the current image
    and shuts the workers down (a terminal sends SIGINT to every process of the run)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def iterate_items(
    dataset: Dataset, ids: list[str], num_workers: int, image_function: ImageFunction | None = None
) -> Iterator[Item]:
    """Items in order, prepared by ``num_workers`` processes (one torch thread each) ahead of use."""
    loader = torch.utils.data.DataLoader(
        SampleSource(dataset, ids, image_function),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_keep_as_is,
        prefetch_factor=4 if num_workers else None,
        worker_init_fn=_ignore_ctrl_c if num_workers else None,
    )
    yield from loader


Engine = Callable[[Dataset, list[str], Callable[[], ImageFunction], RunOptions], Generator[Item, None, None]]
"""Labels the ids to do: ``engine(dataset, ids, make_image_function, options)`` yields one
labelled :class:`Item` (a result or an error) per id, in order."""


def local_engine(
    dataset: Dataset, ids: list[str], make_image_function: Callable[[], ImageFunction], options: RunOptions
) -> Generator[Item, None, None]:
    """This process labels ``batch_size`` images at a time (or, with ``label_in_workers``, its
    DataLoader workers label one by one) while ``num_workers`` processes decode ahead."""
    image_function = make_image_function()  # here, so a model that fails to load fails before any output
    in_workers = options.label_in_workers and options.num_workers > 0
    items = iterate_items(dataset, ids, options.num_workers, image_function if in_workers else None)
    return _in_batches(items, image_function, options.batch_size)


def _in_batches(items: Iterator[Item], image_function: ImageFunction, batch_size: int) -> Generator[Item, None, None]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            yield from label_batch(batch, image_function)
            batch = []
    yield from label_batch(batch, image_function)


def label_batch(items: list[Item], image_function: ImageFunction) -> list[Item]:
    """Label the decoded samples among ``items`` (others keep their result or error): the image
    function's ``prepare_batch`` first, when it has one and there are several, its seconds shared
    out as ``batch_s``; a SampleError fails only its image."""
    pending = [item for item in items if item.error is None and item.result is None and item.sample is not None]
    prepare = getattr(image_function, "prepare_batch", None)
    if prepare is not None and len(pending) > 1:
        start = time.perf_counter()
        prepare([item.sample for item in pending])
        share = round((time.perf_counter() - start) / len(pending), 4)
        for item in pending:
            item.seconds["batch_s"] = share
    for item in pending:
        try:
            with item.seconds.timed("label_s"):
                item.result = image_function(item.sample)
        except SampleError as error:
            item.error = str(error)
        item.sample = None
    return items


class StopRequest:
    """While active, the first Ctrl-C asks the run to stop after the current image; a second one aborts."""

    def __init__(self, on_request: Callable[[], None] | None = None) -> None:
        self.requested = False
        self._on_request = on_request
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._on_request:
            self._on_request()

    def __enter__(self) -> StopRequest:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def run_images(
    dataset: Dataset,
    make_image_function: Callable[[], ImageFunction],
    options: RunOptions,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[], None] | None = None,
    on_stop_request: Callable[[], None] | None = None,
    engine: Engine | None = None,
) -> RunSummary:
    """Label every selected image that is not finished yet; returns what was done.

    Each finished image has ``<id>.png`` (and ``<id>.npz``) written atomically and one manifest
    record: id, status (``ok`` or ``failed``), classes, stage seconds, synonym choices, error.
    The ``engine`` (default :func:`local_engine`) labels the images to do; the image function is
    made (``make_image_function()``: models loaded) only when there is work to do. ``on_start(n)``
    gets the number of images to do; ``on_progress()`` is called after each.
    """
    engine = engine or local_engine
    start = time.perf_counter()
    with RunLock(options.out_dir, options.shard):
        selected = select_ids(dataset.ids(), options.shard, options.limit)
        folders = (options.out_dir, options.scores_dir, options.instances_dir)
        todo = [i for i in selected if options.overwrite or not is_finished(i, *folders)]
        summary = RunSummary(selected=len(selected), already_done=len(selected) - len(todo))
        if on_start:
            on_start(len(todo))
        if todo:
            items = engine(dataset, todo, make_image_function, options)
            manifest_path = options.out_dir / manifest_name(options.shard)
            with Manifest(manifest_path) as manifest, StopRequest(on_stop_request) as stop, closing(items):
                for item in items:
                    _finish_item(item, options, manifest, summary, dataset.class_names)
                    if on_progress:
                        on_progress()
                    if stop.requested:
                        summary.interrupted = True
                        break
    summary.seconds = time.perf_counter() - start
    return summary


def _finish_item(item: Item, options: RunOptions, manifest: Manifest, summary: RunSummary, names: list[str]) -> None:
    """Write a labelled item's outputs and its manifest record.

    A sample error fails the image; a failed write (OutputError) removes what this image wrote
    and stops the run, so a resume redoes it.
    """
    record = StageRecord(id=item.image_id, classes=[names[c] for c in item.classes], **item.seconds)
    result = item.result
    written: list[Path] = []
    if result is not None:
        try:
            written = _write_outputs(item.image_id, result, options)
        except UnsafePathError as error:
            result, item.error = None, str(error)
    if result is None:
        manifest.write({**record, "status": "failed", "error": item.error})
        summary.failed += 1
        summary.failures.append((item.image_id, str(item.error)))
        return
    try:
        manifest.write({**record, **result.record, "status": "ok"})
    except OutputError:
        _remove(written)
        raise
    summary.done += 1
    summary.add_tallies(result.record.tallies)


def _remove(paths: list[Path]) -> None:
    """Take back what an image wrote (its outputs stay consistent: all or none)."""
    for path in paths:
        path.unlink(missing_ok=True)


def _write_outputs(image_id: str, result: ImageResult, options: RunOptions) -> list[Path]:
    """Write the image's instances (when kept), its PNG and its scores (when asked for); the paths
    written. A failed write removes the ones before it and re-raises."""
    writes: list[tuple[Path, Callable[[Path], None]]] = []
    instances = result.record.extras.get("instances") if options.instances_dir is not None else None
    if instances is not None:
        writes.append((id_path(options.instances_dir, image_id, ".npz"), lambda p: save_instances(p, instances)))
    if result.picture is not None:
        writes.append((id_path(options.out_dir, image_id, ".png"), lambda p: write_image(p, result.picture)))
    else:
        writes.append((id_path(options.out_dir, image_id, ".png"), lambda p: write_mask(p, result.label_map)))
    if options.scores_dir is not None and result.scores is not None:
        writes.append((id_path(options.scores_dir, image_id, ".npz"), lambda p: save_scores(p, result.scores)))
    written: list[Path] = []
    try:
        for path, write in writes:
            write(path)
            written.append(path)
    except OutputError:
        _remove(written)
        raise
    return written

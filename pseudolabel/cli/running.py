"""Runs a per-image function over a dataset with a progress bar, then prints the run summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import ProgressColumn, Task
from rich.table import Table
from rich.text import Text

from pseudolabel.cli.app import console, err_console, progress_bar

FAILURES_SHOWN = 5
"""Failed images named with their causes at the end of a run (the manifest has them all)."""


class RateColumn(ProgressColumn):
    """Images per second of a Rich progress task."""

    def render(self, task: Task) -> Text:
        return Text("-" if task.speed is None else f"{task.speed:.2f} img/s")


def make_engine(
    engine: Any, address: str | None, workers: int | None, gpus_per_worker: float | None, old_workers: int | None = None
) -> Any:
    """The run's engine: None for the local one, a :class:`~pseudolabel.runner.ray_engine.RayEngine` for
    ``--engine ray`` (Ray options without it are refused rather than ignored)."""
    from pseudolabel.core.errors import ConfigError

    if old_workers is not None:
        from pseudolabel.cli.app import deprecated

        deprecated("--workers (Ray actors)", "--ray-workers")
        if workers is not None:
            raise ConfigError("give --ray-workers only (--workers is its deprecated alias)")
        workers = old_workers
    if engine == "local":  # EngineName is a str enum
        given = [flag for flag, value in (("--ray-address", address), ("--ray-workers", workers),
                                          ("--gpus-per-worker", gpus_per_worker)) if value is not None]  # fmt: skip
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --engine ray")
        return None
    from pseudolabel.runner.ray_engine import RayEngine, import_ray

    import_ray()
    return RayEngine(address, workers, gpus_per_worker)


def run_with_progress(
    title: str,
    source: Any,
    make_image_function: Callable[[], Any],
    run: Any,
    out: Path,
    report: bool = False,
    engine: Any = None,
) -> None:
    """``run_images`` with a progress bar, then the HTML report of ``out`` when asked; exits 130
    when Ctrl-C stopped the run. Under torchrun, rank 0 alone shows progress and prints the summary
    of every rank (and the report) once all have finished."""
    from pseudolabel.runner.loop import RunSummary, run_images
    from pseudolabel.runner.torchrun import gather_to_main, is_main_process

    main = is_main_process()
    with progress_bar(RateColumn(), disable=not main) as progress:
        task = progress.add_task(title, total=None)
        summary = run_images(
            source, make_image_function, run,
            on_start=lambda total: progress.update(task, total=total),
            on_progress=lambda: progress.advance(task),
            on_stop_request=lambda: err_console.print("stopping after the current image (Ctrl-C again to abort)"),
            engine=engine,
        )  # fmt: skip
    summaries = gather_to_main(summary)
    if summaries is None:
        raise typer.Exit(130 if summary.interrupted else 0)
    summary = RunSummary.combined(summaries)
    print_run_summary(summary, out)
    if summary.interrupted:
        raise typer.Exit(130)
    if report:
        from pseudolabel.report.build import build_report

        page = build_report(source, [out], out / "report", worst=12, allow_missing=True, workers=0)
        console.print(f"report: {escape(str(page))}", highlight=False, soft_wrap=True)


def print_run_summary(summary: Any, out: Path) -> None:
    """Counts, rate, and one table per tally the stages reported."""
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    console.print(
        f"{summary.done} images labelled, {summary.failed} failed, {summary.already_done} already done "
        f"(of {summary.selected} selected) in {summary.seconds:.1f} s ({rate:.2f} img/s); masks in {escape(str(out))}",
        highlight=False,
        soft_wrap=True,
    )
    if summary.failed:
        err_console.print(f"[yellow]{summary.failed} images failed (status 'failed' in the manifest):[/]")
        for image_id, cause in summary.failures[:FAILURES_SHOWN]:
            err_console.print(f"  {escape(image_id)}: {escape(cause)}", highlight=False, soft_wrap=True)
        if summary.failed > FAILURES_SHOWN:
            err_console.print(f"  and {summary.failed - FAILURES_SHOWN} more")
    for title, counts in sorted(summary.tallies.items()):
        table = Table(title=title)
        table.add_column("what")
        table.add_column("count", justify="right")
        for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            table.add_row(escape(key), str(count))
        console.print(table)

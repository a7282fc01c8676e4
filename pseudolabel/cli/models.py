"""``pseudolabel models``: list, download and verify checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pseudolabel.cli.app import console, err_console, models_app
from pseudolabel.core.errors import ConfigError, PseudolabelError


@models_app.command("list")
def models_list() -> None:
    """Show the known checkpoints and whether each is in the cache."""
    from pseudolabel.models.weights import WEIGHTS, cache_dir, cached_path

    table = Table(title=f"checkpoints (cache: {cache_dir()})")
    table.add_column("name", no_wrap=True)
    table.add_column("kind")  # "grounding-dino" may break at its hyphen on a narrow terminal
    for heading in ("size", "cached"):
        table.add_column(heading, no_wrap=True)
    table.add_column("description", overflow="fold")  # long words fold onto the next line, never cut
    unverified = "no sha256*"
    for spec in WEIGHTS.values():
        description = f"{spec.description} ({unverified})" if spec.url and spec.sha256 is None else spec.description
        table.add_row(
            spec.name, spec.kind, f"{spec.size_mb} MB", "yes" if cached_path(spec).is_file() else "no", description
        )
    console.print(table)
    console.print(
        f"{unverified}: the publisher gives no checksum; `pseudolabel models download NAME --allow-unverified` "
        "fetches it anyway and `models verify` prints the sha256 of the file you have."
    )


@models_app.command("download")
def models_download(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="NAMES", help="Registry names (see `pseudolabel models list`).")
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Download every checkpoint with a URL.")] = False,
    allow_unverified: Annotated[bool, typer.Option(help="Allow checkpoints whose publisher gives no sha256.")] = False,
) -> None:
    """Download checkpoints into the cache, verifying their sha256."""
    from pseudolabel.models.weights import WEIGHTS, cached_path

    specs = [spec for spec in WEIGHTS.values() if spec.url] if all_models else [_spec(name) for name in names or []]
    if not specs:
        raise ConfigError("name checkpoints to download, or pass --all")
    for spec in specs:
        if cached_path(spec).is_file():
            console.print(f"{spec.name}: already at {escape(str(cached_path(spec)))}", highlight=False)
            continue
        path = _download_with_progress(spec, allow_unverified)
        console.print(f"{spec.name}: saved {escape(str(path))}", highlight=False)


def _download_with_progress(spec: Any, allow_unverified: bool) -> Path:
    from pseudolabel.models.weights import MissingWeights, download_weights

    if spec.url is None:
        raise MissingWeights(spec)
    with Progress(
        TextColumn(spec.name), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err_console
    ) as progress:
        task = progress.add_task(spec.name, total=None)
        return download_weights(
            spec, allow_unverified, lambda done, total: progress.update(task, completed=done, total=total)
        )


@models_app.command("verify")
def models_verify(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="NAMES", help="Registry names; default: all cached ones.")
    ] = None,
) -> None:
    """Check cached checkpoints against their sha256; exit 1 on a mismatch."""
    from pseudolabel.models.weights import WEIGHTS, cache_dir, verify_weights

    specs = [_spec(name) for name in names] if names else list(WEIGHTS.values())
    results = [verify_weights(spec) for spec in specs]
    if not names and all(result.status == "missing" for result in results):
        console.print(f"nothing cached in {escape(str(cache_dir()))}", highlight=False)
    for result in results:
        if result.status != "missing" or names:
            console.print(
                f"{result.spec.name}: {result.status}" + (f" (sha256 {result.digest})" if result.digest else "")
            )
    mismatched = [r.spec.name for r in results if r.status == "mismatch"]
    if mismatched:
        raise PseudolabelError(f"checksum mismatch: {', '.join(mismatched)}; delete the files and download again")


def _spec(name: str) -> Any:
    from pseudolabel.models.weights import WEIGHTS

    if name not in WEIGHTS:
        raise ConfigError(f"unknown checkpoint {name!r}; known: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]

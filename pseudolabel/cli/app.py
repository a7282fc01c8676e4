"""The Typer application, its consoles, error handling, progress bars and deprecated aliases."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from pseudolabel import __version__
from pseudolabel.errors import PseudolabelError

console = Console()
err_console = Console(stderr=True)


class PseudolabelGroup(TyperGroup):
    """Prints a user error as one line on stderr and exits 1, without a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PseudolabelError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            ctx.exit(1)


app = typer.Typer(
    cls=PseudolabelGroup,
    help="Image-level labels in, per-pixel pseudo-label masks out: generate, refine and score them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
models_app = typer.Typer(
    cls=PseudolabelGroup, help="List, download and verify model checkpoints.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        console.print(f"pseudolabel {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Image-level labels in, per-pixel pseudo-label masks out."""


def progress_bar(*extra: ProgressColumn, disable: bool = False) -> Progress:
    """The progress bar of every run: description, bar, done/total, ``extra`` columns, time left."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )


def deprecated(old: str, new: str) -> None:
    """The one-line notice an old flag or value prints; it keeps working."""
    err_console.print(f"[yellow]note:[/] {old} is deprecated; use {new}", highlight=False, soft_wrap=True)

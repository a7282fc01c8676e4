"""The Typer application, its consoles, error handling, progress bars and deprecated aliases."""

from __future__ import annotations

import inspect
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from typer.core import TyperCommand, TyperGroup

from pseudolabel import __version__
from pseudolabel.core.errors import PseudolabelError
from pseudolabel.core.files import atomic_write_text, home_dir
from pseudolabel.runner.torchrun import is_main_process, tell_torchrun

console = Console()
err_console = Console(stderr=True)


_session = {"debug": False, "output_folder": None}
"""What the error handler needs to know about this invocation."""


def remember_output_folder(folder: Path | None) -> None:
    """Where a command writes, so that an internal error's traceback is saved there."""
    _session["output_folder"] = folder


class PanelledCommand(TyperCommand):
    """Help in Click's plain layout, options grouped under their panels: each description wraps
    beside its flag, or starts below a long one, so it reads at any terminal width (Rich's table
    squeezed descriptions into a narrow column at 80 columns)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                default = "Arguments" if param.param_type_name == "argument" else "Options"
                panels.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(record)
        for title, rows in panels.items():
            with formatter.section(title):
                formatter.write_dl(rows)

    def get_short_help_str(self, limit: int = 45) -> str:
        """The help's first sentence, whole: the command list wraps it rather than cutting it."""
        first = inspect.cleandoc(self.help or "").split("\n\n")[0].replace("\n", " ")
        return first.split(". ")[0].rstrip(".")


class PseudolabelGroup(TyperGroup):
    """Prints a user error as one line on stderr and exits 1, without a traceback; an internal
    error (a bug) prints one line too and saves its traceback to ``OUT/error.log``."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as error:  # typer's choice check words it as a pydantic error
            error.message = str(error.message).replace("Value error, ", "")
            raise
        except PseudolabelError as error:
            report_user_error(str(error))
            ctx.exit(1)
        except (typer.TyperException, typer.Exit, typer.Abort):  # usage errors, --help, Ctrl-C: click's own
            raise
        except Exception as error:
            report_internal_error(error)
            ctx.exit(1)


def report_user_error(message: str) -> None:
    """``error: <message>`` on stderr, once: under torchrun rank 0 prints it and every failing rank
    hands it to torchrun, whose report names it per rank."""
    tell_torchrun(f"error: {message}")
    if is_main_process():
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def report_skipped(skipped: list[tuple[str, str]], done: str) -> None:
    """Each skipped image and why (stderr), then the ``done`` line with how many were skipped."""
    for image_id, why in skipped:
        err_console.print(f"[yellow]skipped[/] {escape(image_id)}: {escape(why)}", highlight=False, soft_wrap=True)
    suffix = f"; {len(skipped)} skipped (listed above)" if skipped else ""
    console.print(escape(done) + suffix, highlight=False, soft_wrap=True)


def report_internal_error(error: Exception) -> None:
    """One line naming the error and where it happened, the traceback saved (printed with --debug)."""
    text = "".join(traceback.format_exception(error))
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    folder = _session["output_folder"] or home_dir()
    log = Path(folder) / "error.log"
    try:
        atomic_write_text(log, f"pseudolabel {__version__}: {' '.join(sys.argv)}\n{text}")
        saved = f"traceback saved to {log}"
    except OSError:
        saved = "the traceback could not be saved"
    if _session["debug"]:
        err_console.print(text, highlight=False, markup=False)
    tell_torchrun(f"internal error (a bug): {type(error).__name__}: {error}{where}; {saved}")
    err_console.print(
        f"[bold red]error:[/] internal error (a bug): {type(error).__name__}: {escape(str(error))}{where}; "
        f"{escape(saved)}; "
        "please report it (pseudolabel --debug ... prints the traceback)",
        highlight=False,
        soft_wrap=True,
    )


class PseudolabelTyper(typer.Typer):
    """The tool's Typer apps: errors as :class:`PseudolabelGroup` reports them, help as
    :class:`PanelledCommand` prints it, and the help when called without a command."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=PseudolabelGroup, no_args_is_help=True, rich_markup_mode=None, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", PanelledCommand)
        return super().command(*args, **kwargs)


app = PseudolabelTyper(
    help="Image-level labels in, per-pixel pseudo-label masks out: generate, refine and score them.",
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = PseudolabelTyper(help="List, download and verify model checkpoints.")
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        console.print(f"pseudolabel {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an internal error."),
) -> None:
    """Image-level labels in, per-pixel pseudo-label masks out."""
    _session["debug"] = debug


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

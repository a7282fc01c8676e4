"""The ``pseudolabel`` command: one module per command; each parses flags into the library's
settings and calls the library (registries, stages, the run), and prints what it did."""

from __future__ import annotations

from pseudolabel.cli import export, generate, import_corrections, models, overlay, refine, report, score, train  # noqa: F401
from pseudolabel.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()

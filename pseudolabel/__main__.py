"""Allows `python -m pseudolabel ...` (and `torchrun -m pseudolabel ...`)."""

from pseudolabel.cli import main

main()

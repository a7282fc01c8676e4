"""Errors a user can act on.

The CLI prints their message as one line and exits with status 1; any other exception is a
bug: the CLI prints one line and saves the traceback (``--debug`` prints it).
"""

from __future__ import annotations

from collections.abc import Sequence


def listed(items: Sequence[object], shown: int = 10) -> str:
    """The first ``shown`` items of a message's list, then how many more."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(str(item) for item in items[:shown]) + more


class PseudolabelError(Exception):
    """A user error: the message says what is wrong, where, and how to fix it, in one line."""


class ConfigError(PseudolabelError):
    """A bad option value or config file."""


class SampleError(PseudolabelError):
    """A problem with one image or mask: a run reports it and goes on with the others."""


class ImageLoadError(SampleError):
    """An image that cannot be decoded, or is larger than the allowed pixel count."""


class MaskError(SampleError):
    """A mask that cannot be read or holds values that are not class ids."""


class WeightsError(PseudolabelError):
    """A checkpoint that is missing, cannot be downloaded, or fails its checksum."""


class UnsafePathError(SampleError):
    """An image id or file entry that would read outside the dataset or write outside ``--out``."""


class OutputError(PseudolabelError):
    """An output that cannot be written (disk full, I/O error, permission): the run stops."""


class RunLockedError(PseudolabelError):
    """Another live run holds the output folder (and shard)."""

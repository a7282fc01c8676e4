"""pseudolabel: image-level labels in, per-pixel pseudo-label masks out.

The Python API (:mod:`pseudolabel.api`) is importable from here; it loads torch on first use,
so ``import pseudolabel`` stays cheap for the command line.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Labeler", "Labeling", "ModelSettings", "create_labeler", "create_refiner", "open_dataset", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pseudolabel import api, registry

        return getattr(api, name, None) or getattr(registry, name)
    raise AttributeError(f"module 'pseudolabel' has no attribute {name!r}")

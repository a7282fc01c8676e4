"""pseudolabel: image-level labels in, per-pixel pseudo-label masks out."""

__version__ = "0.1.0"

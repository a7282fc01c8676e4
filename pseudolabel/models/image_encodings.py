"""One image's encoding at a time, reused: the part every promptable segmenter (the SAM families,
SAM 3) shares. Setting the same image array again keeps its encoding; :meth:`embed_batch` encodes
several images in one image-encoder pass ahead of their ``set_image``. Images are told apart by
identity (the run's loop hands each sample's array to every stage), not by value."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class CachedImageEncoder:
    """Encodes images under autocast and keeps the current one. A subclass says how a batch is
    encoded (``_encode_batch``), how one encoding becomes the current image (``_install``) and how
    one image is encoded and installed on its own (``_embed_one``); it gives ``device``."""

    def __init__(self, autocast_dtype: torch.dtype | None = None) -> None:
        self.autocast_dtype = autocast_dtype
        self._image: np.ndarray | None = None
        self._batch: list[tuple[np.ndarray, Any]] = []

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    @torch.no_grad()
    def embed_batch(self, images: list[np.ndarray]) -> None:
        """Encode uint8 [H, W, 3] ``images`` in one image-encoder pass, as ``set_image`` prepares
        each; ``set_image`` of one of these arrays then takes its encoding from here. The previous
        batch's are dropped."""
        self._batch = []
        if images:
            with self._autocast():
                encodings = self._encode_batch([np.ascontiguousarray(rgb) for rgb in images])
            self._batch = list(zip(images, encodings, strict=True))

    @torch.no_grad()
    def set_image(self, rgb: np.ndarray) -> None:
        """Encode uint8 [H, W, 3] ``rgb`` (skipped when it is the array set last, taken from
        :meth:`embed_batch` when that encoded it)."""
        if rgb is self._image:
            return
        for array, encoding in self._batch:
            if array is rgb:
                self._install(encoding)
                self._image = rgb
                return
        with self._autocast():
            self._embed_one(np.ascontiguousarray(rgb))
        self._image = rgb

    def _encode_batch(self, images: list[np.ndarray]) -> list[Any]:
        """One encoding per image, from one image-encoder pass (runs under autocast)."""
        raise NotImplementedError

    def _install(self, encoding: Any) -> None:
        """Make ``encoding`` (one of :meth:`_encode_batch`'s) the current image."""
        raise NotImplementedError

    def _embed_one(self, rgb: np.ndarray) -> None:
        """Encode and install one image (runs under autocast)."""
        raise NotImplementedError
